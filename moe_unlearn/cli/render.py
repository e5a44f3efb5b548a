"""How each command prints its result without --json (rich text and tables on stdout)."""

import math
from pathlib import Path

from rich.table import Table

from moe_unlearn.audit.report import summary_rows
from moe_unlearn.cli.common import err, out
from moe_unlearn.models.mixing import saved_settings
from moe_unlearn.unlearning.certificate import summary as certificate_summary


def render_training(m: dict) -> None:
    """The held-out table of a manifest (or of `evaluate`), then the files a training run trained."""
    if m.get("live") is False:  # train.experts named a share of the experts: see `expert export`
        out.print(
            f"version {m['version']} is not live yet: trained {', '.join(m['trained']) or 'nothing new'}; "
            f"still to train here or import: {', '.join(m['remaining'])}",
            highlight=False,
        )
        return
    ev = m["eval"]
    if ev is None:  # a version built by a forget or drop job
        out.print(f"version {m['version']} was not evaluated: run `moe-unlearn evaluate`")
    else:
        table = Table(title=f"version {m['version']}: held-out bits per byte", title_justify="left")
        for col in ("source", "expert", "held-out records", "bits/byte"):
            table.add_column(col, justify="right" if col != "source" else "left")
        for source, bpb in ev["heldout_bpb"].items():
            table.add_row(source, m["sources"][source], str(ev["heldout_records"][source]), f"{bpb:.3f}")
        out.print(table)
        accuracy = ", ".join(f"{k} bytes {v:.1%}" for k, v in ev["router_top1"].items())
        out.print(f"router top-1 accuracy on held-out prefixes: {accuracy}")
    if "trained" in m:
        imported = [p for p in m["trained"] if "imported" in m["files"][p]]  # by `expert import`
        here = [p for p in m["trained"] if p not in imported]
        out.print(
            f"trained {len(here)} files: {', '.join(here) or 'none'}"
            + (f"; imported {len(imported)}: {', '.join(imported)}" if imported else "")
        )


def render_ingest(r: dict) -> None:
    if r.get("created_run_dir"):
        c = r["created_run_dir"]
        out.print(
            f"created a new run directory holding the built-in corpus ({c['builtin_records']:,} records in "
            f"{c['builtin_sources']} sources) and your records. Meant an existing run? Check --run-dir. "
            "An empty run: `moe-unlearn init --run-dir DIR data.builtin=false`, then ingest."
        )
    if r.get("role") == "base":
        out.print(f"added {r['records_added']:,} records to base source {r['source']!r} (trains the base model)")
    else:
        out.print(f"added {r['records_added']:,} records to source {r['source']!r} (expert {r['expert']!r})")
    if r.get("integer_ids"):
        out.print(
            f"note: {r['integer_ids']:,} ids were JSON integers, stored as their decimal text "
            '(the id 5 is "5" in `forget --record` and everywhere else)'
        )


def render_export(r: dict) -> None:
    out.print(f"exported expert {r['expert']!r} to {r['bundle']}", highlight=False)


def render_import(r: dict) -> None:
    if not r["imported"]:
        out.print(f"expert {r['expert']!r} is already up to date in version {r['version']}: nothing imported")
        return
    rest = ", ".join(r["remaining"]) or "nothing"
    out.print(
        f"imported expert {r['expert']!r} into version {r['version']} (not live yet); train still trains: {rest}",
        highlight=False,
    )


def render_request_result(r: dict) -> None:
    """A forget or drop: what a dry run would do, the certificate, or where a queued request stands."""
    if r.get("dry_run"):
        out.print(f"dry run: {r['kind']} would remove {r['record_count']:,} records:")
        for rec in r["records"][:20]:
            out.print(f"  {rec['id']} ({rec['source']})", highlight=False)
        if r["record_count"] > 20:
            out.print(f"  ... and {r['record_count'] - 20:,} more")
        w = r["would_retrain"]
        if w.get("full_rebuild"):
            out.print("full rebuild: base-source records trained the base model, which every expert branches from")
        out.print(
            f"would retrain {'the base model, ' if w.get('base') else ''}experts: {', '.join(w['experts']) or 'none'}; "
            f"router stages: {', '.join(map(str, w['router_stages'])) or 'none'}. Nothing was changed."
        )
    elif "chain_hash" in r:
        out.print(certificate_summary(r, r["chain_hash"]), highlight=False)
    else:
        out.print(f"request {r['request_id']} is {r['status']} (step {r['step']})")


def render_verify(r: dict) -> None:
    for path, status in r["files"].items():
        out.print(f"  {path}: {status}", highlight=False)
    verdict = "EQUAL to the oracle" if r["equal"] else "DIFFERENT from the oracle"
    out.print(f"version {r['version']} is {verdict} (oracle trained in {r['oracle_seconds']} s)")
    if not r["comparable"]:
        out.print(f"cannot judge bit-identity: built with a different {', '.join(r['environment_differs'])}")
        if r["lineage_equal"]:
            out.print("training-data lineage: identical to the oracle's for every file (config, order, records)")
        else:
            out.print(f"training-data lineage: DIFFERS from the oracle's in {', '.join(r['lineage_differs'])}")


def render_audit(r: dict) -> None:
    table = Table(title=f"audit of {r['request']} ({r['method']})")
    for column in ("measure", "before", "after"):
        table.add_column(column)
    for row in summary_rows(r):
        table.add_row(*row)
    out.print(table)
    out.print(f"report: {Path(r['files'][0]).parent}/ ({', '.join(Path(p).name for p in r['files'])})", highlight=False)


def render_generate(r: dict) -> None:
    out.print(f"[dim]{_escape(r['prompt'])}[/]{_escape(r['text'])}", highlight=False)
    # stdout holds only the text
    err.print(f"version {r['version']}, experts: {_weights(r['expert_weights'])}; {mixing_text(r['mixing'])}")


def render_score(r: dict) -> None:
    out.print(
        f"{r['bits_per_byte']:.3f} bits/byte over {r['bytes']} bytes (version {r['version']}); "
        f"experts: {_weights(r['expert_weights'])}; {mixing_text(r['mixing'])}"
    )


def mixing_text(settings: dict) -> str:
    """The mixing rule in words: 'mixing: router top-2' or 'mixing: posterior (decay 0.98, ...)'."""
    if settings["rule"] == "router":
        return f"mixing: router top-{settings['top_k']}"
    details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items() if k != "rule")
    return f"mixing: {settings['rule']} ({details})"


def render_canaries(r: dict) -> None:
    n = r["candidates"] + 1
    for c in r["canaries"]:
        sentence = c["prefix"].rsplit("\n", 1)[-1]
        verdict = "[bold red]the secret[/]" if c["extracted"] else "not the secret"
        out.print(
            f"{c['id']} in {c['source']}: {c['copies_trained_on']} copies in the training data of version "
            f"{r['version']}\n"
            f"  text:   {_escape(sentence)}[bold]{c['secret']}[/].\n"
            f"  model:  {_escape(sentence)}[bold]{_escape(c['greedy'])}[/]  (greedy continuation: {verdict})\n"
            f"  rank:   the secret is the model's #{c['rank']:,} among {n:,} random secrets "
            f"(exposure {c['exposure']:.1f} of at most {math.log2(n):.1f} bits)",
            highlight=False,
            soft_wrap=True,
        )


def render_registry(info: dict) -> None:
    """The sources, then the current version's manifest, then the requests and their certificate chain."""
    out.print(_sources_table(info))
    m = info["manifest"]
    if m is None:
        out.print("no trained version yet")
        return
    out.print(
        f"current version {m['version']} (created {m['created']}, config {m['config_sha256'][:12]}, "
        f"torch {m['environment']['torch']}, {m['environment']['threads']} threads); "
        f"{mixing_text(saved_settings(m))}"
    )
    out.print(_manifest_table(m))
    if info["requests"]:
        out.print(_requests_table(info["requests"]))
        chain = "intact" if info["certificate_chain_intact"] else "BROKEN (an entry was edited or removed)"
        out.print(f"certificate chain: {chain}")
        for r in info["requests"]:
            if r.get("interrupted"):
                out.print(
                    f"request {r['id']} was interrupted at step {r['step']} (its job is gone): finish it with "
                    f"`moe-unlearn forget --resume {r['id']}` (any forget, drop or update also does)"
                )


def _sources_table(info: dict) -> Table:
    table = Table(title=f"run {info['run_dir']}", title_justify="left")
    for col in ("stage", "expert", "source", "role", "built-in", "records"):
        table.add_column(col)
    for s in info["sources"]:
        table.add_row(
            str(info["experts"].index(s["expert"])) if s["expert"] in info["experts"] else "",  # base: no stage
            s["expert"],
            s["name"],
            s["role"],
            "yes" if s["builtin"] else "",
            f"{s['records']:,}",
        )
    return table


def _manifest_table(m: dict) -> Table:
    table = Table(title="manifest", title_justify="left")
    for col in ("file", "sha256", "records", "trained in version"):
        table.add_column(col)
    for path, e in m["files"].items():
        table.add_row(path, e["sha256"][:16], f"{e['records']:,}", str(e["trained_in_version"]))
    return table


def _requests_table(requests: list[dict]) -> Table:
    table = Table(title="requests", title_justify="left")
    for col in ("request", "status", "records", "deadline", "versions", "certificate"):
        table.add_column(col)
    for r in requests:
        versions = f"{r['version_before']} -> {r['version_after']}" if r["version_after"] is not None else ""
        table.add_row(
            r["id"],
            ("interrupted" if r.get("interrupted") else r["status"])
            + (f" ({r['step']})" if r["status"] == "running" else ""),
            f"{r['records']:,}",
            (r["deadline"] or "") + (f" ({r['deadline_status']})" if r.get("deadline_status") else ""),
            versions,
            (r["certificate_hash"] or r["error"] or "")[:16],
        )
    return table


def render_dictd(r: dict, out_dir: Path) -> None:
    table = Table(title=f"dictd sources in {out_dir}", title_justify="left")
    for col in ("source", "entries", "records written", "duplicates", "empty"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for name, c in r.items():
        table.add_row(name, f"{c['entries']:,}", f"{c['written']:,}", f"{c['duplicates']:,}", f"{c['empty']:,}")
    out.print(table)


def _weights(weights: dict[str, float]) -> str:
    """Expert weights, heaviest first, leaving out those under 0.005."""
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(weights.items(), key=lambda kv: -kv[1]) if v >= 0.005)


def _escape(text: str) -> str:
    """Model text printed with markup on: an opening bracket must not start a rich tag."""
    return text.replace("[", "\\[")
