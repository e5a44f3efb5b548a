"""The `moe-unlearn` command line (also `python -m moe_unlearn`): a thin layer over `moe_unlearn.Run`.

Every command takes --run-dir; commands that print results take --json. A mistake the user can fix
is one line on stderr and exit code 2, never a traceback.
"""

import functools
import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from moe_unlearn.audit.report import summary_rows
from moe_unlearn.errors import UserError
from moe_unlearn.run import DEFAULT_RUN_DIR, Run
from moe_unlearn.serving.command import serve
from moe_unlearn.training.distributed import train_or_follow
from moe_unlearn.unlearning.certificate import summary as certificate_summary

app = typer.Typer(
    help="Language models that can forget: a mixture of per-source experts, exact unlearning by retraining one expert.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks must never print locals (they may hold record text)
)
out = Console()
err = Console(stderr=True)

RunDir = Annotated[Path, typer.Option("--run-dir", help="Run directory (registry, versions, current pointer).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
IdField = Annotated[str, typer.Option("--id-field", help="JSONL field holding the id.")]
TextField = Annotated[str, typer.Option("--text-field", help="JSONL field holding the text.")]
AllowForgotten = Annotated[
    bool, typer.Option("--allow-forgotten", help="Accept content that was forgotten (the override is recorded).")
]


def user_errors(command):
    """Turn UserError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            err.print(f"[red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def emit(result: dict, as_json: bool, render) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        render(result)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="YAML merged over configs/default.yaml.")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Train the composed model (experts, then router stages); extra arguments are key=value overrides.

    Example: moe-unlearn train --config configs/experiment/tiny.yaml train.expert.max_steps=50
    """
    manifest = Run(run_dir, console=err).train(config, ctx.args)
    emit(manifest, as_json, render_training)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def init(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="YAML merged over configs/default.yaml.")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
):
    """Create a run directory without training: with the built-in corpus, or empty (`data.builtin=false`)
    for your own sources, added with `ingest`.

    Example: moe-unlearn init --config configs/experiment/dictd.yaml --run-dir checkpoints/dictd
    """
    run = Run(run_dir, console=err)
    if run.exists():
        raise UserError(f"{run_dir} is already a run directory")
    run.init(config, ctx.args)
    out.print(f"created {run_dir} ({run.info()['records']:,} records)", soft_wrap=True)


@app.command()
@user_errors
def ingest(
    files: Annotated[
        list[Path], typer.Argument(help=".txt (blank-line separated) or .jsonl ({id, text[, source]}) files.")
    ],
    source: Annotated[str, typer.Option("--source", help="Source the records belong to (created if new).")],
    expert: Annotated[str | None, typer.Option("--expert", help="Expert of a new source (default: its own).")] = None,
    id_field: IdField = "id",
    text_field: TextField = "text",
    allow_forgotten: AllowForgotten = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add records to a source, all or nothing; `update` (or `train`) then trains what changed.

    Files are streamed (never read whole), with a progress bar over the bytes read; a bad line stops the
    ingest with FILE:LINE and nothing added.
    """
    result = Run(run_dir, console=err).ingest(
        source, files, expert=expert, id_field=id_field, text_field=text_field, allow_forgotten=allow_forgotten
    )
    emit(
        result,
        as_json,
        lambda r: out.print(f"added {r['records_added']:,} records to source {r['source']!r} (expert {r['expert']!r})"),
    )


@app.command()
@user_errors
def registry(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Sources, experts, record counts, the current version and its manifest."""
    emit(Run(run_dir, console=err).info(), as_json, render_registry)


@app.command()
@user_errors
def forget(
    records: Annotated[list[str] | None, typer.Option("--record", help="Record id to forget (repeatable).")] = None,
    match: Annotated[str | None, typer.Option("--match", help="Forget every record containing TEXT.")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="File of record ids, one per line.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source (default: all).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go and be retrained.")] = False,
    deadline: Annotated[str | None, typer.Option("--deadline", help="Legal deadline (ISO date), recorded.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Finish the pending request with this id.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Queue the request and return.")] = False,
    audit: Annotated[
        bool, typer.Option("--audit", help="Measure before/after while the text exists (see `audit`).")
    ] = False,
    method: Annotated[
        str,
        typer.Option("--method", help="exact (default); gradient-ascent or nabla-tau: approximate, for contrast."),
    ] = "exact",
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Forget records exactly: retrain only the experts that saw them, then print the certificate."""
    run = Run(run_dir, console=err)
    if resume is not None:
        if records or match or ids_file:
            raise UserError("--resume takes no --record, --match or --ids-file")
        result = run.resume(resume)
    else:
        result = run.forget(
            records=records or (),
            match=match,
            ids_file=ids_file,
            source=source,
            dry_run=dry_run,
            deadline=deadline,
            wait=not no_wait,
            audit=audit,
            method=method,
        )
    report = run.audit(result["request_id"]) if audit and "statement" in result else None
    if report is not None and as_json:
        result = {**result, "audit_files": report["files"]}
    emit(result, as_json, render_request_result)
    if report is not None and not as_json:
        render_audit(report)


@app.command()
@user_errors
def drop(
    source: Annotated[str | None, typer.Option("--source", help="Source to drop.")] = None,
    expert: Annotated[str | None, typer.Option("--expert", help="Expert to drop, with all its sources.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go and be retrained.")] = False,
    deadline: Annotated[str | None, typer.Option("--deadline", help="Legal deadline (ISO date), recorded.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Queue the request and return.")] = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Drop a source or an expert; no other expert is retrained."""
    result = Run(run_dir, console=err).drop(
        source=source, expert=expert, dry_run=dry_run, deadline=deadline, wait=not no_wait
    )
    emit(result, as_json, render_request_result)


@app.command()
@user_errors
def add(
    files: Annotated[list[Path], typer.Argument(help=".txt or .jsonl files of the new source.")],
    source: Annotated[str, typer.Option("--source", help="Name of the new source.")],
    expert: Annotated[
        str | None, typer.Option("--expert", help="Name of its new expert (default: the source).")
    ] = None,
    id_field: IdField = "id",
    text_field: TextField = "text",
    allow_forgotten: AllowForgotten = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add a source as a new expert plus one router stage; nothing else is retrained."""
    manifest = Run(run_dir, console=err).add(
        source, files, expert=expert, id_field=id_field, text_field=text_field, allow_forgotten=allow_forgotten
    )
    emit(manifest, as_json, render_training)


@app.command()
@user_errors
def update(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Retrain the experts whose sources gained records, and the router stages from the earliest of them."""
    emit(Run(run_dir, console=err).update(), as_json, render_training)


@app.command()
@user_errors
def verify(
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Keep the oracle here (default: temp).")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Train the oracle from scratch on the retained records and compare it tensor for tensor.
    Exit code 0: equal; 1: different; 3: cannot judge bit-identity (built on another torch or CPU: the
    training-data lineage in the manifests is compared instead and printed)."""
    result = Run(run_dir, console=err).verify(work_dir)

    def render(r):
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

    emit(result, as_json, render)
    if not result["comparable"]:  # whatever the tensors say, the verdict is the lineage's
        raise typer.Exit(3)
    if not result["equal"]:
        raise typer.Exit(1)


@app.command()
@user_errors
def audit(
    request: Annotated[str, typer.Option("--request", help="Id of a request forgotten with --audit.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write (default: RUN_DIR/audits/ID).")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Report on a forget: membership inference, canary exposure and extraction, router agreement,
    timings (audit.json, audit.md and plots), from the numbers measured at forget time."""
    emit(Run(run_dir, console=err).audit(request, out_dir), as_json, render_audit)


@app.command()
@user_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue (may be empty).")],
    max_new_bytes: Annotated[int, typer.Option("--max-new-bytes", "-n", min=0, max=100_000)] = 200,
    temperature: Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0: greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k likeliest bytes (0: all).")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Continue PROMPT with the current version."""
    result = Run(run_dir, console=err).generate(prompt, max_new_bytes, temperature, top_k, seed)

    def render(r):
        out.print(f"[dim]{_escape(r['prompt'])}[/]{_escape(r['text'])}", highlight=False)
        err.print(f"version {r['version']}, experts: {_weights(r['expert_weights'])}")

    emit(result, as_json, render)


@app.command()
@user_errors
def evaluate(run_dir: RunDir = DEFAULT_RUN_DIR, as_json: AsJson = False):
    """Held-out bits per byte per source and router top-1 accuracy of the current version."""
    emit(Run(run_dir, console=err).evaluate(), as_json, render_training)


@app.command()
@user_errors
def score(
    text: Annotated[str, typer.Argument(help="Text to score ('-' reads stdin).")],
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Bits per byte of TEXT under the current version, and the router's expert weights."""
    if text == "-":
        text = sys.stdin.read()
    result = Run(run_dir, console=err).score(text)
    emit(
        result,
        as_json,
        lambda r: out.print(
            f"{r['bits_per_byte']:.3f} bits/byte over {r['bytes']} bytes (version {r['version']}); "
            f"experts: {_weights(r['expert_weights'])}"
        ),
    )


@app.command()
@user_errors
def canaries(
    ids: Annotated[list[str] | None, typer.Option("--id", help="Only this canary (repeatable).")] = None,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Random secrets to rank against.")] = 4096,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Does the model know the built-in canaries' secrets? Greedy continuation, rank and exposure."""
    result = Run(run_dir, console=err).canaries(ids or (), candidates)

    def render(r):
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

    emit(result, as_json, render)


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


def render_audit(r: dict) -> None:
    table = Table(title=f"audit of {r['request']} ({r['method']})")
    for column in ("measure", "before", "after"):
        table.add_column(column)
    for row in summary_rows(r):
        table.add_row(*row)
    out.print(table)
    out.print(f"report: {Path(r['files'][0]).parent}/ ({', '.join(Path(p).name for p in r['files'])})", highlight=False)


def render_request_result(r: dict) -> None:
    if r.get("dry_run"):
        out.print(f"dry run: {r['kind']} would remove {r['record_count']:,} records:")
        for rec in r["records"][:20]:
            out.print(f"  {rec['id']} ({rec['source']})", highlight=False)
        if r["record_count"] > 20:
            out.print(f"  ... and {r['record_count'] - 20:,} more")
        w = r["would_retrain"]
        out.print(
            f"would retrain experts: {', '.join(w['experts']) or 'none'}; "
            f"router stages: {', '.join(map(str, w['router_stages'])) or 'none'}. Nothing was changed."
        )
    elif "chain_hash" in r:
        out.print(certificate_summary(r, r["chain_hash"]), highlight=False)
    else:
        out.print(f"request {r['request_id']} is {r['status']} (step {r['step']})")


def render_registry(info: dict) -> None:
    table = Table(title=f"run {info['run_dir']}", title_justify="left")
    for col in ("stage", "expert", "source", "built-in", "records"):
        table.add_column(col)
    for s in info["sources"]:
        table.add_row(
            str(info["experts"].index(s["expert"])),
            s["expert"],
            s["name"],
            "yes" if s["builtin"] else "",
            f"{s['records']:,}",
        )
    out.print(table)
    m = info["manifest"]
    if m is None:
        out.print("no trained version yet")
        return
    out.print(
        f"current version {m['version']} (created {m['created']}, config {m['config_sha256'][:12]}, "
        f"torch {m['environment']['torch']}, {m['environment']['threads']} threads)"
    )
    files = Table(title="manifest", title_justify="left")
    for col in ("file", "sha256", "records", "trained in version"):
        files.add_column(col)
    for path, e in m["files"].items():
        files.add_row(path, e["sha256"][:16], f"{e['records']:,}", str(e["trained_in_version"]))
    out.print(files)
    if info["requests"]:
        requests = Table(title="requests", title_justify="left")
        for col in ("request", "status", "records", "deadline", "versions", "certificate"):
            requests.add_column(col)
        for r in info["requests"]:
            versions = f"{r['version_before']} -> {r['version_after']}" if r["version_after"] is not None else ""
            requests.add_row(
                r["id"],
                r["status"] + (f" ({r['step']})" if r["status"] == "running" else ""),
                f"{r['records']:,}",
                r["deadline"] or "",
                versions,
                (r["certificate_hash"] or r["error"] or "")[:16],
            )
        out.print(requests)
        chain = "intact" if info["certificate_chain_intact"] else "BROKEN (an entry was edited or removed)"
        out.print(f"certificate chain: {chain}")


def _weights(weights: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(weights.items(), key=lambda kv: -kv[1]) if v >= 0.005)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


app.command()(serve)  # moe_unlearn/serving: handles its own errors (one line, exit 2)


def main() -> None:
    if sys.argv[1:2] == ["train"]:  # with several processes (DDP) each runs this: rank 0 trains, the others follow
        train_or_follow(app, sys.argv[2:], prog_name="moe-unlearn")
    else:
        app()


data_app = typer.Typer(
    help="Real corpora: fetch and convert them into JSONL sources for `ingest`.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
@user_errors
def data_prepare(
    corpus: Annotated[str, typer.Argument(help="Which corpus: dictd (Debian's dictionary packages).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the JSONL files, one per source.")],
    install: Annotated[
        bool, typer.Option("--install/--no-install", help="apt-get install missing packages (needs root).")
    ] = True,
    dictd_dir: Annotated[Path, typer.Option("--dictd-dir", help="Where the dictd files are.")] = Path(
        "/usr/share/dictd"
    ),
    as_json: AsJson = False,
):
    """Convert a real corpus into JSONL sources (the one command that installs packages).

    Example: moe-unlearn data prepare dictd --out data/dictd, then
    moe-unlearn ingest --source jargon data/dictd/jargon.jsonl (one source per dictionary).
    """
    if corpus != "dictd":
        raise UserError(f"unknown corpus {corpus!r}: the one available is dictd")
    from moe_unlearn.data.dictd import prepare  # imported here: only this command needs it

    result = prepare(out_dir, dictd_dir, install=install, console=err)

    def render(r):
        table = Table(title=f"dictd sources in {out_dir}", title_justify="left")
        for col in ("source", "entries", "records written", "duplicates", "empty"):
            table.add_column(col, justify="left" if col == "source" else "right")
        for name, c in r.items():
            table.add_row(name, f"{c['entries']:,}", f"{c['written']:,}", f"{c['duplicates']:,}", f"{c['empty']:,}")
        out.print(table)

    emit(result, as_json, render)


expert_app = typer.Typer(
    help="Move trained experts between run directories: train experts on separate machines, the router on one.",
    no_args_is_help=True,
)
app.add_typer(expert_app, name="expert")


@expert_app.command("export")
@user_errors
def expert_export(
    name: Annotated[str, typer.Argument(help="Expert to export.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle directory to create (must not exist).")],
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Write a trained expert and its lineage (config, record ids, sha256, torch, CPU, threads) to a bundle.

    Example: python train.py --run-dir runs/a train.experts=[recipes], then
    moe-unlearn expert export recipes --out recipes.expert --run-dir runs/a
    """
    result = Run(run_dir, console=err).export_expert(name, out_dir)
    emit(result, as_json, lambda r: out.print(f"exported expert {r['expert']!r} to {r['bundle']}", highlight=False))


@expert_app.command("import", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def expert_import(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `expert export`.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML merged over configs/default.yaml.")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Add an exported expert to this run's next version, if it is what this run would train for it.

    Pass the --config and key=value overrides this run trains with: the bundle must match their config
    hash and this registry's training records. `train` then trains only what is still missing.
    """
    result = Run(run_dir, console=err).import_expert(bundle, config, ctx.args)

    def render(r):
        if not r["imported"]:
            out.print(f"expert {r['expert']!r} is already up to date in version {r['version']}: nothing imported")
            return
        rest = ", ".join(r["remaining"]) or "nothing"
        out.print(
            f"imported expert {r['expert']!r} into version {r['version']} (not live yet); train still trains: {rest}",
            highlight=False,
        )

    emit(result, as_json, render)
