"""Benchmark: what forgetting costs and what it leaves, ours against the alternatives (not a test).

On the built-in corpus (K sources, one expert each) it trains our model once, then, side by side in
one run, forgets 10 records of one source and drops that source, by:

- ours, exact: `Run.forget` (retrains the source's expert, and the router stages whose samples held a
  forgotten record) and `Run.drop` (deletes the expert, re-runs the router stages after it): the wall
  time of the whole command (resolve, train, switch, scrub, certificate), each on a fresh copy of the
  trained run directory;
- ours, approximate: `Run.forget(method="gradient-ascent" | "nabla-tau")` on the expert's weights;
- (b) dense: one ByteTransformer with about as many parameters as all experts and the router
  (`utility.jobs("dense-matched")`), retrained from scratch on all training records less the forgotten
  ones (less the dropped source): the `train_expert` time;
- (d) SISA: K expert-size models, each on a seeded 1/K shard of all training records
  (`utility.jobs("sisa")`); forgetting retrains the shards that held a forgotten record, dropping the
  shards that held any record of the source (random shards: all of them). Time: those shards' training.

Speedups are ratios of times measured in this one run (the machine is noisy; ratios hold better than
seconds). Quality after each method: held-out bits per byte on the same records for every model (the
first `data.eval_records` held-out records of each source, canary copies excluded; after the drop, the
other sources'), and, for our model before and after each forget, the audit that `forget --audit` makes
(moe_unlearn.audit.collect's `audit_data` and `measure`, called here after the forget, so that the
forget's time is the forget alone and --quick can shrink the audit): membership-inference AUC of the
forgotten texts against never-trained ones of the same kind, privleak against the exact forget's model
(bit-identical to retraining from scratch, so it is the oracle), canary exposure (log2 rank of the
secret among sampled candidates) and greedy extraction. Dense and SISA retrain from scratch without the
records: exact by construction, so they have nothing to audit.

The forgotten records: by default one canary (a random 6-hex-digit secret in text of the source) inserted
10 times into the first source, so the 10 records are its 10 copies (`data.corpus.canaries=1
data.corpus.canary_repeats=10`). A secret copied into a handful of documents is the request this tool
exists for, and a canary makes forgetting measurable: exposure shows whether the secret can still be
singled out among 4,096 others, which 10 ordinary records cannot show (nothing in them is unique to them).
With other canary settings the set is every copy of as many whole canaries of the source as fit in
--records, then its first trained-on ordinary records by id. The first source is the worst case for our
forget and drop: every later router stage replays its records. Caveats of the default set: with default
training (2 epochs) the secret is only weakly memorised (`train.expert.max_epochs=12`, as in
configs/experiment/audit.yaml, memorises it, at 6x the training cost of every method); and the membership
AUC rests on one member text (the canary) against never-inserted canaries, a rank rather than a
distribution: exposure is the measure to read.

    .venv/bin/python -m bench.forget_cost            # default config, K = 4: ~1.3 h on 2 cores (estimate)
    .venv/bin/python -m bench.forget_cost --quick    # 250 records a domain, d_model 64: ~5 min (estimate)
    .venv/bin/python -m bench.forget_cost --source code data.corpus.domains=8   # another source, K = 8
    .venv/bin/python -m bench.forget_cost --quick --data data/dictd   # dictd, 500 steps an expert

With --data (the --out folder of `moe-unlearn data prepare dictd`) the corpus is Debian's five dictd
dictionaries (configs/experiment/dictd.yaml unless --config), one expert each; real text carries no
canaries, so the forget set is the source's first 10 trained-on records and the audit columns rest on
them against held-out entries of the same dictionary (membership AUC only: no exposure, no extraction).

Time estimates, not measurements (2 idle cores, AMD EPYC AVX2; from docs/BENCHMARKS.md's ~84 s per default
expert, ~5 s per router stage and ~2 s per canary ranking among 4,096 candidates in the audit benchmark;
the smoke test ran at the smallest sizes on cores another benchmark held, so its seconds say nothing):
default config: our training ~6 min, the three forgets and the drop ~3 min, the two audit passes (129
canaries ranked under 4 models, ~600 texts scored) ~20 min, the dense retrains (4x the parameters on 4x
the data, then 3x) ~35 min, the SISA shards ~10 min, scoring ~3 min. --quick: ~5 min, most of it the
dense retrains. Writes JSON and Markdown to --out and a PNG to --plots.
"""

import argparse
import shutil
import tempfile
from pathlib import Path
from statistics import mean

from rich.console import Console

from bench.common import (
    ingest_dictd,
    machine_line,
    provenance,
    publish,
    report_defaults,
    report_options,
    save_figure,
    timed,
)
from bench.utility import DICTD, Ensemble, corpus, expert_params, jobs, params, score
from moe_unlearn import Run
from moe_unlearn.audit.collect import ATTACKS, AuditSettings, audit_data, measure
from moe_unlearn.audit.metrics import privleak
from moe_unlearn.config import Config, load_config
from moe_unlearn.data.corpus import generate_corpus, make_canaries
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.rundir import read_current, read_manifest, version_dir
from moe_unlearn.storage.builds import served_config
from moe_unlearn.training.trainer import configure_torch, train_expert

DEFAULTS = ["data.corpus.canaries=1", "data.corpus.canary_repeats=10"]
QUICK = ["data.corpus.records_per_domain=250", "model.expert.d_model=64", "data.eval_records=30"]
QUICK_DICTD = ["train.expert.max_steps=500", "model.expert.d_model=64", "data.eval_records=30"]  # steps, not epochs
# --quick audits with fewer candidates and comparison sets than `forget --audit` (AuditSettings()).
QUICK_AUDIT = AuditSettings(candidates=1024, min_heldout=50, retained=50, min_never_inserted=32, router_prefixes=20)
APPROXIMATE = ("gradient-ascent", "nabla-tau")
LABELS = {
    "exact": "ours, exact",
    "gradient-ascent": "ours, gradient ascent (approximate)",
    "nabla-tau": "ours, nabla-tau (approximate)",
    "dense": "(b) dense retrain",
    "sisa": "(d) SISA retrain",
    "full": "ours, full retrain",
    "before": "before (nothing forgotten)",
}
ORDER = ("exact", "ours", *APPROXIMATE, "dense", "sisa", "full", "before")  # table and plot order
Sources = dict[str, list[Record]]


def forget_set(cfg: Config, train: Sources, source: str, n: int) -> tuple[list[str], list[str]]:
    """(record ids, canary ids): every copy of as many whole canaries of `source` as fit in n (held-out
    copies too: a request names records, not training examples), then its first trained-on records by id."""
    c = cfg.data.corpus
    canaries = make_canaries(c.canaries, c.seed, c.domains)
    copies = {i for k in canaries for i in k.record_ids(c.canary_repeats)}
    ids, used = [], []
    for k in (k for k in canaries if k.source == source):
        if len(ids) + c.canary_repeats > n:
            break
        ids += k.record_ids(c.canary_repeats)
        used.append(k.id)
    ids += [r.id for r in train[source] if r.id not in copies][: n - len(ids)]
    return ids, used


def retrained(run_dir: Path) -> dict:
    """What the served version's build trained, with the training seconds of its experts and router stages."""
    manifest = read_manifest(version_dir(run_dir, read_current(run_dir)))
    trained = {p: manifest["files"][p].get("train_seconds", 0.0) for p in manifest["trained"]}
    return {
        "retrained": sorted(trained),
        "expert_train_s": round(sum(s for p, s in trained.items() if p.startswith("experts/")), 2),
        "router_train_s": round(sum(s for p, s in trained.items() if p.startswith("router/")), 2),
    }


def describe(files: list[str]) -> str:
    """What a build trained, from its trained files' paths: e.g. "expert recipes + router stages 0-3"."""
    experts = [p.removeprefix("experts/").removesuffix(".safetensors") for p in files if p.startswith("experts/")]
    stages = sorted(int(p.split("_")[-1].split(".")[0]) for p in files if p.startswith("router/"))
    parts = [f"expert {', '.join(experts)}"] if experts else []
    if stages:
        span = f"{stages[0]}-{stages[-1]}" if stages == list(range(stages[0], stages[-1] + 1)) else str(stages)[1:-1]
        parts.append(f"router stages {span}" if len(stages) > 1 else f"router stage {stages[0]}")
    return " + ".join(parts) or "nothing"


def train_models(calls: list[tuple[Config, str, list[Record]]], timed_names: set[str], work: Path, console) -> tuple:
    """Train every (config, name, records) call with `train_expert`: (Ensemble of them, seconds of the
    `timed_names` ones). The others are trained only to score the whole model (SISA's unchanged shards)."""
    models, seconds = [], 0.0
    for cfg, name, records in calls:
        note = "" if name in timed_names else " (unchanged, untimed: for scoring only)"
        console.print(f"  {name}: {len(records):,} records, {expert_params(cfg.model.expert):,} parameters{note}")
        model = ByteTransformer(cfg.model.expert)
        tensors, s = timed(train_expert, cfg, name, records, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work)))
        model.load_state_dict(tensors)
        models.append(model)
        seconds += s if name in timed_names else 0.0
    return Ensemble(models).eval(), seconds


def baselines(cfg: Config, train: Sources, drop: Sources, removed: set[str], work: Path, console) -> dict:
    """(b) dense and (d) SISA retrained on `train` less the `removed` record ids (forget) and on `drop`
    (drop): {scenario: {method: (model, seconds, what was retrained)}}. Their shapes and shards are
    those of the full training set (utility.jobs), so a drop keeps K shards and the dense model's size."""
    lr = cfg.train.expert.lr
    out = {"forget": {}, "drop": {}}
    sisa = jobs("sisa", cfg, lr, train)
    (dense_cfg, dense_name, everything), *_ = jobs("dense-matched", cfg, lr, train)
    kept = {r.id for records in drop.values() for r in records}
    for scenario, keep in (("forget", lambda r: r.id not in removed), ("drop", lambda r: r.id in kept)):
        console.print(f"[bold](b) dense[/], {scenario}: retraining from scratch")
        calls = [(dense_cfg, dense_name, [r for r in everything if keep(r)])]
        model, seconds = train_models(calls, {dense_name}, work, console)
        out[scenario]["dense"] = (model, seconds, "the whole model")
        shards = [(c, name, [r for r in records if keep(r)], len(records)) for c, name, records in sisa]
        changed = {name for _, name, records, n in shards if len(records) != n}
        console.print(f"[bold](d) SISA[/], {scenario}: retraining {len(changed)} of {len(shards)} shards")
        model, seconds = train_models([s[:3] for s in shards], changed, work, console)
        out[scenario]["sisa"] = (model, seconds, f"{len(changed)} of {len(shards)} shards")
    return out


def audit(models: dict, data, settings: AuditSettings, console: Console) -> dict[str, dict]:
    """The audit's numbers for each model. `measure` takes a (before, after) pair; the models go in
    pairs and each side is read out alone."""
    names, out = list(models), {}
    for a, b in zip(names[::2], names[1::2], strict=True):
        console.print(f"audit: {a} and {b}")
        numbers = measure(models[a], models[b], data, settings, console)
        out[a], out[b] = side(numbers, "before"), side(numbers, "after")
    return out


def side(numbers: dict, when: str) -> dict:
    """One model's share of `measure`'s numbers: bits per byte per set, membership AUC per attack, canaries."""
    attacks, canaries = numbers["membership"]["attacks"], numbers["canaries"]
    out = {
        "bits_per_byte": {group: round(v[when], 4) for group, v in numbers["bits_per_byte"].items()},
        "auc": {a: round(attacks[a][when]["auc"], 4) for a in ATTACKS} if attacks else None,
        "auc_se": {a: round(attacks[a][when]["se"], 4) for a in ATTACKS} if attacks else None,
        "exposure_inserted": None,
    }
    if canaries:
        out |= {
            "exposure_inserted": round(mean(canaries["inserted"][when]), 2),
            "exposure_never_inserted": round(mean(canaries["never_inserted"][when]), 2),
            "extracted": canaries["extracted"][when],
            "canaries": canaries["extracted"]["of"],
            "candidates": canaries["candidates"],
            "mann_whitney_p": canaries["tests"][when]["p_value"],
        }
    return out


def sources(c: dict) -> str:
    """The report's corpus in words: "4 domains x 250 records" or "dictd (data/dictd), 5 sources"."""
    if c.get("records_per_domain") is None:
        return f"{c['corpus']}, {c['domains']} sources"
    return f"{c['domains']} domains x {c['records_per_domain']} records"


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def rows(table: dict) -> list[dict]:
    return [table[k] for k in ORDER if k in table]


def markdown(report: dict) -> str:
    c, f, a = report["config"], report["forget_set"], report["audit_settings"]
    src = f["source"]
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides'])}`: {sources(c)}, experts n_layer "
        f"{c['n_layer']} d_model {c['d_model']}, max_epochs {c['max_epochs']}, max_steps {c.get('max_steps', -1)} "
        f"({c['ours_params']:,} parameters with the router); dense {c['dense_shape']} "
        f"({c['dense_params']:,} parameters)",
        f"- Command: `{report['command']}`",
        f"- Forget set: {f['records']} records of {src} ({f['trained_on']} trained on): "
        + (f"every copy of canary {', '.join(f['canaries'])}" if f["canaries"] else "no canaries")
        + f". Drop: source {src}. Held-out test records: {f['test_records']} ({f['test_records_after_drop']} "
        f"after the drop). Audit: "
        + (
            f"{a['candidates']:,} candidates per canary, at least {a['min_never_inserted']} never-inserted canaries "
            f"and {a['min_heldout']} held-out records."
            if f["canaries"]
            else f"membership only (no canary in the forget set), against at least {a['min_heldout']} held-out records."
        ),
        "",
        f"**Forget {f['records']} records**",
        "",
        f"| method | exact | retrained | seconds | time / ours | held-out bits/byte after: {src} / all "
        "| forget set bits/byte | MIA AUC (loss) | privleak vs exact | exposure inserted / never-inserted (bits) "
        "| extracted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ours = report["forget"]["exact"]["seconds"]
    for r in rows(report["forget"]):
        audit = r.get("audit") or {}
        leak = (r.get("privleak") or {}).get("loss")
        seconds = r["seconds"]
        lines.append(
            f"| {r['label']} | {r['exact']} | {r['what']} | {fmt(seconds, '.1f')} | "
            f"{fmt(seconds and seconds / ours, '.2f')}{'x' if seconds else ''} | "
            f"{r['heldout_bpb'][src]:.3f} / {r['mixture_bpb']:.3f} | "
            f"{fmt(audit.get('bits_per_byte', {}).get('forget'))} | {fmt((audit.get('auc') or {}).get('loss'))} | "
            f"{fmt(leak, '+.1f')}{'%' if leak is not None else ''} | "
            f"{fmt(audit.get('exposure_inserted'), '.2f')} / {fmt(audit.get('exposure_never_inserted'), '.2f')} | "
            + (f"{audit['extracted']} of {audit['canaries']}" if audit.get("canaries") else "-")
            + " |"
        )
    lines += [
        "",
        "**Drop one source**",
        "",
        "| method | retrained | seconds | time / ours | held-out bits/byte after, other sources |",
        "|---|---|---|---|---|",
    ]
    ours = report["drop"]["ours"]["seconds"]
    for r in rows(report["drop"]):
        seconds = r["seconds"]
        lines.append(f"| {r['label']} | {r['what']} | {seconds:.1f} | {seconds / ours:.2f}x | {r['mixture_bpb']:.3f} |")
    lines += [
        "",
        "Seconds: ours, the whole `forget`/`drop` call (resolve, train, switch, scrub, certificate); dense and "
        "SISA, their `train_expert` calls alone (no loading, scrub or certificate: the comparison that favours "
        "them); full retrain, the training time alone of our build from scratch (experts and router stages), "
        "whose model is our exact forget's (drop's), bit for bit. time / ours: the row's seconds over our exact "
        "forget's (drop's): above 1x we are faster. Held-out bits/byte: the same held-out records for every model "
        "(lower is better); the forget set's is our model's on the forgotten trained-on records. The audit "
        f"columns measure our model on the forget set against never-trained texts of the same kind ({src}); "
        "privleak (MUSE) compares the membership AUC with the exact forget's model, the oracle (0 = no more "
        "leakage than retraining without the records; the before row shows what there was to remove). Dense and "
        "SISA retrain from scratch without the records: exact by construction, nothing to audit.",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state

    figure = Figure(figsize=(13, 4.8), layout="constrained")
    bars, points = figure.subplots(1, 2, width_ratios=[1.3, 1])
    colours = {"ours": "tab:blue", "gradient-ascent": "tab:red", "nabla-tau": "tab:purple"}
    labels, seconds, colour = [], [], []
    for scenario in ("forget", "drop"):
        for r in rows(report[scenario]):
            if r["seconds"] is not None:
                labels.append(f"{scenario}: {r['label']}")
                seconds.append(r["seconds"])
                colour.append(colours.get(r["kind"], "tab:gray"))
    bars.barh(range(len(labels)), seconds, color=colour)
    bars.set_yticks(range(len(labels)), labels, fontsize="small")
    bars.invert_yaxis()
    bars.set_xscale("log")
    bars.set_xlabel("seconds (log scale)")
    for i, s in enumerate(seconds):
        bars.annotate(f"{s:.1f} s", (s, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize="small")
    bars.set_title(f"Time to forget {report['forget_set']['records']} records, or to drop a source")
    for r in rows(report["forget"]):
        if r["seconds"] is None:
            points.axhline(r["mixture_bpb"], color="gray", linestyle=":", label=r["label"])
            continue
        points.scatter(r["seconds"], r["mixture_bpb"], color=colours.get(r["kind"], "tab:gray"))
        points.annotate(
            r["label"], (r["seconds"], r["mixture_bpb"]), xytext=(4, 4), textcoords="offset points", fontsize="small"
        )
    points.set_xscale("log")
    points.set_xlabel("seconds to forget (log scale)")
    points.set_ylabel("held-out bits per byte after (lower is better)")
    points.set_title("Cost and quality after the forget")
    points.legend(fontsize="small")
    c = report["config"]
    figure.suptitle(f"Forgetting cost: {sources(c)} ({report['date'][:10]})")
    save_figure(figure, path)


def ours(args, overrides: list[str], source: str, ids: list[str], work: Path, console: Console) -> dict:
    """Train our model (on the dictd files of `args.data` if given), then forget `ids` by each method and
    drop `source`, each on a copy of the trained run directory: {"full": training seconds per file,
    "models": {name: model}, "forget": {method: row}, "drop": row}."""
    pristine = work / "pristine"
    run = Run(pristine, console=console)
    run.init(args.config, overrides)
    if args.data:
        ingest_dictd(run, args.data, DICTD, args.config, overrides)
    console.print("[bold]ours[/]: training")
    manifest = run.train(args.config, overrides)
    out = {"full": {p: e["train_seconds"] for p, e in manifest["files"].items()}, "forget": {}}
    out["models"] = {"before": Run(pristine, console=console).load()[0]}
    for method in ("exact", *APPROXIMATE):
        console.print(f"[bold]ours[/]: forget, {method}")
        run_dir = work / f"ours-{method}"
        shutil.copytree(pristine, run_dir)
        run = Run(run_dir, console=console)
        certificate, seconds = timed(run.forget, records=ids, method=method)
        out["forget"][method] = {"seconds": round(seconds, 2), **retrained(run_dir)}
        out["forget"][method]["certificate_wall_seconds"] = certificate["wall_seconds"]
        out["models"][method] = run.load()[0]
    console.print("[bold]ours[/]: drop")
    run_dir = work / "ours-drop"
    shutil.copytree(pristine, run_dir)
    run = Run(run_dir, console=console)
    experts = run.info()["experts"]
    _, seconds = timed(run.drop, source=source)
    out["drop"] = {"seconds": round(seconds, 2), **retrained(run_dir)}
    out["drop"]["deleted"] = sorted(set(experts) - set(run.info()["experts"]))
    out["models"]["drop"] = run.load()[0]
    out["cfg"] = served_config(pristine)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)}, a smaller audit")
    parser.add_argument("--records", type=int, default=10, help="records to forget")
    parser.add_argument("--source", help="source to forget from and drop (default: the first, the worst case)")
    report_options(parser, "forget_cost")
    parser.add_argument("overrides", nargs="*", help=f"config overrides, after {' '.join(DEFAULTS)} (built-in)")
    args = parser.parse_args()
    console = Console(stderr=True)
    suffix = report_defaults(args, "forget_cost")
    quick = (QUICK_DICTD if args.data else QUICK) if args.quick else []
    overrides = ["trainer.progress_bar=false", *([] if args.data else DEFAULTS), *quick, *args.overrides]
    settings = QUICK_AUDIT if args.quick else AuditSettings()
    cfg = load_config(args.config, overrides)
    configure_torch(cfg)
    c = cfg.data.corpus
    train, test = corpus(args.config, overrides, args.data)  # test: no held-out copy of a trained-on text
    source = args.source or next(iter(train))
    if source not in train:
        parser.error(f"unknown source {source!r}; the corpus has {', '.join(train)}")
    ids, canaries = forget_set(cfg, train, source, args.records)
    if args.data:  # every record the audit may draw on: the held-out copies of trained-on texts aside
        every = [r for split in (train, test) for records in split.values() for r in records]
    else:
        every = generate_corpus(c.domains, c.records_per_domain, c.seed, c.canaries, c.canary_repeats)
    forgotten = [r for r in every if r.id in set(ids)]
    trained_on = [i for i in ids if not is_heldout(i, cfg.seed, cfg.data.heldout_fraction)]
    drop_train = {s: records for s, records in train.items() if s != source}
    drop_test = {s: records for s, records in test.items() if s != source}
    console.print(f"forget set: {len(ids)} records of {source} ({len(trained_on)} trained on), canaries {canaries}")

    with tempfile.TemporaryDirectory(prefix="moe-unlearn-forget-cost-") as tmp:
        work = Path(tmp)
        o = ours(args, overrides, source, ids, work, console)
        others = baselines(cfg, train, drop_train, set(ids), work, console)
    models = o["models"]
    live = [r for r in every if r.id not in set(ids)]
    audited = ("before", "exact", *APPROXIMATE)
    numbers = audit({m: models[m] for m in audited}, audit_data(o["cfg"], forgotten, live, settings), settings, console)
    console.print("scoring every model on the held-out test records")
    forget = {}
    for method in audited:
        row = {"label": LABELS[method], "kind": "ours" if method == "exact" else method, "exact": "no"}
        row |= {"what": "-", "seconds": None, **o["forget"].get(method, {})}
        if method != "before":
            row["what"] = describe(row["retrained"])
        forget[method] = {**row, **score(models[method], test), "audit": numbers[method]}
    forget["exact"]["exact"], forget["before"]["exact"], forget["before"]["kind"] = "yes", "-", "reference"
    exact_auc = numbers["exact"]["auc"]
    for method in audited:
        auc = numbers[method]["auc"]
        forget[method]["privleak"] = {a: privleak(auc[a], exact_auc[a]) for a in ATTACKS} if auc else None
    drop = {"ours": {"label": "ours, drop", "kind": "ours", **o["drop"], "what": describe(o["drop"]["retrained"])}}
    if o["drop"]["deleted"]:
        drop["ours"]["what"] = f"expert {', '.join(o['drop']['deleted'])} deleted; retrained: {drop['ours']['what']}"
    drop["ours"] |= score(models["drop"], drop_test)
    for scenario, table, after in (("forget", forget, "exact"), ("drop", drop, "ours")):
        for name in ("dense", "sisa"):
            model, seconds, shards = others[scenario][name]
            table[name] = {"label": LABELS[name], "kind": "baseline", "exact": "yes", "what": shards}
            table[name]["seconds"] = round(seconds, 2)
            table[name] |= score(model, drop_test if scenario == "drop" else test)
        # Our full retrain without the records gives our exact forget's (drop's) model, bit for bit.
        table["full"] = {"label": LABELS["full"], "kind": "reference", "exact": "yes", "what": "every file"}
        table["full"] |= {"seconds": round(sum(o["full"].values()), 2), "same_model_as": after}
        table["full"] |= {k: table[after][k] for k in ("heldout_bpb", "mixture_bpb")}

    e = cfg.model.expert
    dense = jobs("dense-matched", cfg, cfg.train.expert.lr, train)[0][0].model.expert
    report = {
        **provenance(args.config),
        "overrides": overrides,
        "quick": args.quick,
        "config": {
            "corpus": f"dictd ({args.data})" if args.data else "built-in",
            "domains": len(train),
            "records_per_domain": None if args.data else c.records_per_domain,
            "max_steps": cfg.train.expert.max_steps,
            "n_layer": e.n_layer,
            "d_model": e.d_model,
            "max_epochs": cfg.train.expert.max_epochs,
            "dense_shape": f"{dense.n_layer}x{dense.d_model}",
            "dense_params": expert_params(dense),
            "ours_params": params(models["before"]),
        },
        "forget_set": {
            "source": source,
            "records": len(ids),
            "trained_on": len(trained_on),
            "canaries": canaries,
            "test_records": sum(len(r) for r in test.values()),
            "test_records_after_drop": sum(len(r) for r in drop_test.values()),
        },
        "audit_settings": vars(settings),
        "full_retrain_train_seconds": o["full"],
        "forget": forget,
        "drop": drop,
        "speedups": {
            f"{scenario} vs {name}": table[name]["seconds"] / table[ours_key]["seconds"]
            for scenario, table, ours_key in (("forget", forget, "exact"), ("drop", drop, "ours"))
            for name in ("dense", "sisa", "full")
        },
    }
    for name, ratio in report["speedups"].items():
        console.print(f"{name}: {ratio:.2f}x (their seconds over ours; above 1x ours is faster)")
    publish(report, markdown(report), args.out, plot, args.plots / f"forget_cost{suffix}.png", console)


if __name__ == "__main__":
    main()
