"""Benchmark: forget time and router replay time as the number of experts K grows (not a test).

For each K (2, 4, 8, 16 by default) it trains the default config with K built-in domains, one expert each,
on the same total data (records_per_domain = --total // K: 8,000 records in all by default), then forgets
10 trained-on records of one source (the first by default: the worst case, since every later router stage
replays its records, so the forget re-runs every stage). The forget's wall time (the whole `Run.forget`
call) is split into

- expert retraining: the training seconds of the expert files the forget's build trained (manifest);
- router replay: the training seconds of the router stages it re-ran (manifest);
- the rest: loading, planning, switch, scrub and certificate;

and compared with the full retrain: the training time alone of the from-scratch build (all K experts and
K router stages, from its manifest), as in bench/forget_speedup.py. With the data fixed, an expert's
share shrinks as 1/K while a forget re-runs up to K router stages, each training on its own expert's
sample plus up to `train.router.replay_records` replayed records: router replay grows with K and at some
K costs more than the expert. The script prints the first K at which it does (and a log-log interpolation
of where the two cross), or says it does not within the range; writes JSON and a PNG.

    .venv/bin/python -m bench.scaling                        # K = 2 4 8 16, 8,000 records: ~35 min (estimate)
    .venv/bin/python -m bench.scaling --quick                # 800 records: ~5 min (estimate)
    .venv/bin/python -m bench.scaling --k 4 8 16 32 --total 16000   # K <= 16 built-in domains
    .venv/bin/python -m bench.scaling --quick --data data/dictd      # dictd: K = 2 3 4 5 dictionaries

With --data (the --out folder of `moe-unlearn data prepare dictd`) the K domains are the first K of Debian's
five dictd dictionaries (so K <= 5), each contributing a seeded random sample of --total // K of its
entries (2,500 in all by default: devil's 999 entries cap a share), trained by the default config's epochs
like the built-in domains (not dictd.yaml's fixed step budget, which would not hold the total data fixed).

Time estimates (2 idle cores, AMD EPYC AVX2), from docs/BENCHMARKS.md's figures (~84 s for an expert on
1,800 records, ~5 s for a router stage on 3,000) and the per-fit overheads seen in the smoke test (which
ran at the smallest sizes on cores another benchmark held, so its seconds say nothing by themselves): each
K's training costs about the same expert time (same data) plus K router stages; the default run is ~4 x
6 min of training plus ~8 min of forgets. Config overrides apply to every K; data.corpus.domains and
data.corpus.records_per_domain are set per K.
"""

import argparse
import json
import math
import shutil
import tempfile
from itertools import pairwise
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import machine_line, provenance, publish, report_defaults, report_options, timed
from bench.utility import DICTD, corpus
from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.data.ingest import read_records
from moe_unlearn.data.splits import is_heldout, unit_hash
from moe_unlearn.rundir import read_current, read_manifest, version_dir

QUICK_TOTAL = 800
DEFAULT_K = [2, 4, 8, 16]
DICTD_TOTAL = 2500  # devil, the third dictionary, has 999 entries: K = 3 takes 833 of each
# Reporting only (not timed): the held-out evaluation `train` runs after training, kept small.
FIXED = ["trainer.progress_bar=false", "data.eval_records=10"]


def seconds_by_kind(manifest: dict, paths: list[str]) -> tuple[float, float]:
    """(expert, router-stage) training seconds of the manifest's `paths`."""
    files = manifest["files"]
    expert = sum(files[p].get("train_seconds", 0.0) for p in paths if p.startswith("experts/"))
    router = sum(files[p].get("train_seconds", 0.0) for p in paths if p.startswith("router/"))
    return expert, router


def dictd_sample(data: Path, k: int, total: int, seed: int, work: Path) -> dict[str, list]:
    """The first k dictionaries' share of `total` entries each, a seeded random sample, written to JSONL
    files in `work` for `ingest`: {source: records}."""
    sample = {}
    for name in DICTD[:k]:
        entries = sorted(read_records(data / f"{name}.jsonl", name), key=lambda r: unit_hash(seed, "scaling", r.id))
        sample[name] = entries[: total // k]
        with (work / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in sample[name])
    return sample


def bench_k(k: int, args, work: Path, console: Console) -> dict:
    if args.data:
        overrides = [*FIXED, "data.builtin=false", *args.overrides]
    else:
        overrides = [
            *FIXED,
            *args.overrides,
            f"data.corpus.domains={k}",
            f"data.corpus.records_per_domain={args.total // k}",
        ]
    run_dir = work / f"k{k}"
    run = Run(run_dir, console=console)
    per_domain = args.total // k
    if args.data:
        cfg = load_config(args.config, overrides)
        folder = work / f"k{k}-data"
        folder.mkdir()
        sample = dictd_sample(args.data, k, args.total, cfg.seed, folder)
        per_domain = min(len(records) for records in sample.values())
        if per_domain < args.total // k:
            console.print(f"[yellow]K = {k}: a dictionary has only {per_domain:,} entries: less than --total in all")
        run.init(args.config, overrides)
        for name in sample:
            run.ingest(name, [folder / f"{name}.jsonl"])
    console.print(f"[bold]K = {k}[/]: training ({per_domain:,} records per domain)")
    manifest, train_wall = timed(run.train, args.config, overrides)
    full_expert, full_router = seconds_by_kind(manifest, list(manifest["files"]))
    source = manifest["experts"][min(args.stage, k - 1)]  # one source per expert
    if args.data:
        trained_on = [r for r in sample[source] if not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)]
    else:
        trained_on = corpus(args.config, overrides)[0][source]
    ids = [r.id for r in trained_on][: args.records]
    console.print(f"[bold]K = {k}[/]: forgetting {len(ids)} records of {source}")
    certificate, forget = timed(run.forget, records=ids)
    after = read_manifest(version_dir(run_dir, read_current(run_dir)))
    expert, router = seconds_by_kind(after, after["trained"])
    stages = [p for p in after["trained"] if p.startswith("router/")]
    shutil.rmtree(run_dir)
    return {
        "k": k,
        "records_per_domain": per_domain,
        "source": source,
        "records_forgotten": len(ids),
        "full_retrain_s": round(full_expert + full_router, 2),
        "full_expert_s": round(full_expert, 2),
        "full_router_s": round(full_router, 2),
        "train_command_wall_s": round(train_wall, 1),
        "forget_s": round(forget, 2),
        "forget_expert_s": round(expert, 2),
        "forget_router_s": round(router, 2),
        "forget_rest_s": round(forget - expert - router, 2),
        "router_stages_rerun": len(stages),
        "experts_retrained": certificate["retrained"]["experts"],
        "router_over_expert": round(router / expert, 3) if expert else None,
        "speedup": round((full_expert + full_router) / forget, 2),
    }


def crossover(results: list[dict]) -> dict:
    """The first K whose router replay exceeds its expert retraining, and where log(router / expert) crosses
    0 between measured K (linear in log K), or None when it does not in the range."""
    ratios = [(r["k"], r["router_over_expert"]) for r in results if r["router_over_expert"]]
    first = next((k for k, ratio in ratios if ratio > 1), None)
    estimate = None
    for (k0, r0), (k1, r1) in pairwise(ratios):
        if r0 <= 1 < r1:
            t = -math.log(r0) / (math.log(r1) - math.log(r0))
            estimate = round(math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0))), 1)
            break
    if first is not None and first == ratios[0][0]:
        estimate = None  # already dominant at the smallest K: no crossing inside the range
    return {"first_k": first, "interpolated_k": estimate}


def markdown(report: dict) -> str:
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides']) or '(no overrides)'}`; "
        f"{report.get('corpus', 'built-in corpus')}, {report['total']:,} records in all, split over K domains; "
        f"forget {report['records']} trained-on records "
        f"of the source of router stage {report['stage']}",
        f"- Command: `{report['command']}`",
        "",
        "| K | records / domain | full retrain s (experts + router) | forget s | expert retraining s "
        "| router replay s (stages) | rest s | router / expert | speedup (full / forget) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        ratio = "-" if r["router_over_expert"] is None else f"{r['router_over_expert']:.2f}"
        lines.append(
            f"| {r['k']} | {r['records_per_domain']:,} | {r['full_retrain_s']:.1f} ({r['full_expert_s']:.1f} + "
            f"{r['full_router_s']:.1f}) | {r['forget_s']:.1f} | {r['forget_expert_s']:.1f} | "
            f"{r['forget_router_s']:.1f} ({r['router_stages_rerun']}) | {r['forget_rest_s']:.1f} | {ratio} | "
            f"{r['speedup']:.2f}x |"
        )
    lines += ["", verdict(report), ""]
    lines.append(
        "Full retrain: the training time alone of the from-scratch build (its manifest's train_seconds). Forget: "
        "the wall time of the whole `forget` call; expert retraining and router replay are the train_seconds of "
        "the files its build trained, the rest is loading, planning, switch, scrub and certificate."
    )
    return "\n".join(lines)


def verdict(report: dict) -> str:
    c, ks = report["crossover"], [r["k"] for r in report["results"]]
    if c["first_k"] is None:
        return f"Router replay does not exceed expert retraining for K = {', '.join(map(str, ks))}."
    if c["first_k"] == ks[0]:
        return f"Router replay already exceeds expert retraining at the smallest K measured, K = {ks[0]}."
    where = f" (interpolated: K ~ {c['interpolated_k']})" if c["interpolated_k"] else ""
    return f"Router replay first exceeds expert retraining at K = {c['first_k']}{where}."


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    results = report["results"]
    ks = [r["k"] for r in results]
    parts = {"forget_expert_s": "expert retraining", "forget_router_s": "router replay", "forget_rest_s": "rest"}
    colours = dict(zip(parts, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    stacked, lines = figure.subplots(1, 2)
    bottom = [0.0] * len(ks)
    for key, label in parts.items():
        values = [max(r[key], 0.0) for r in results]
        stacked.bar(range(len(ks)), values, bottom=bottom, label=label, color=colours[key])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    stacked.set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
    stacked.set_ylabel("seconds")
    stacked.set_title("One forget, split by what it spends time on")
    stacked.legend()
    lines.plot(ks, [r["full_retrain_s"] for r in results], "k-", label="full retrain (training)")
    lines.plot(ks, [r["forget_s"] for r in results], "o-", color="tab:purple", label="forget (whole call)")
    for key in ("forget_expert_s", "forget_router_s"):
        lines.plot(ks, [r[key] for r in results], "s--", color=colours[key], label=parts[key])
    if report["crossover"]["interpolated_k"]:
        lines.axvline(report["crossover"]["interpolated_k"], color="gray", linestyle=":", label="router = expert")
    lines.set_xscale("log", base=2)
    lines.set_yscale("log")
    lines.set_xticks(ks, [str(k) for k in ks])
    lines.xaxis.set_minor_formatter(NullFormatter())
    lines.yaxis.set_major_formatter(ScalarFormatter())
    lines.yaxis.set_minor_formatter(NullFormatter())
    lines.set_xlabel("K (experts), same total data")
    lines.set_ylabel("seconds (log scale)")
    lines.set_title("Forget against full retrain as K grows")
    lines.legend(fontsize="small")
    figure.suptitle(f"Scaling: {report['total']:,} records over K domains ({report['date'][:10]})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"--total {QUICK_TOTAL} unless --total is given")
    parser.add_argument("--k", type=int, nargs="+", default=DEFAULT_K, help="numbers of experts (<= 16)")
    parser.add_argument(
        "--total", type=int, help="records in all, split evenly over the K domains (default 8000; dictd 2500)"
    )
    parser.add_argument("--records", type=int, default=10, help="trained-on records to forget")
    parser.add_argument("--stage", type=int, default=0, help="forget from the source of this router stage (0: worst)")
    report_options(parser, "scaling", "the first K dictionaries as domains (K <= 5, default 2 3 4 5)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every K, e.g. model.expert.d_model=64")
    args = parser.parse_args()
    console = Console(stderr=True)
    suffix = report_defaults(args, "scaling", dictd_config=False)  # not dictd.yaml: see the docstring
    args.total = args.total or (QUICK_TOTAL if args.quick else DICTD_TOTAL if args.data else 8000)
    if args.data and args.k == DEFAULT_K:
        args.k = [2, 3, 4, 5]
    most = len(DICTD) if args.data else 16
    if max(args.k) > most or min(args.k) < 1:
        parser.error(f"K must be 1..{most} (the {'dictd dictionaries' if args.data else 'built-in domains'})")
    results = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-scaling-") as tmp:
        for k in sorted(args.k):
            results.append(bench_k(k, args, Path(tmp), console))
            r = results[-1]
            console.print(
                f"K = {k}: full retrain {r['full_retrain_s']:.1f} s; forget {r['forget_s']:.1f} s = expert "
                f"{r['forget_expert_s']:.1f} + router {r['forget_router_s']:.1f} ({r['router_stages_rerun']} stages) "
                f"+ rest {r['forget_rest_s']:.1f}"
            )
    report = {
        **provenance(args.config),
        "overrides": [*FIXED, *(["data.builtin=false"] if args.data else []), *args.overrides],
        "corpus": f"dictd corpus ({args.data}), the first K dictionaries" if args.data else "built-in corpus",
        "quick": args.quick,
        "total": args.total,
        "records": args.records,
        "stage": args.stage,
        "results": results,
        "crossover": crossover(results),
    }
    table = Table("K", "full retrain s", "forget s", "expert s", "router s", "rest s", "router / expert", "speedup")
    for r in results:
        ratio = "-" if r["router_over_expert"] is None else f"{r['router_over_expert']:.2f}"
        table.add_row(
            str(r["k"]),
            f"{r['full_retrain_s']:.1f}",
            f"{r['forget_s']:.1f}",
            f"{r['forget_expert_s']:.1f}",
            f"{r['forget_router_s']:.1f}",
            f"{r['forget_rest_s']:.1f}",
            ratio,
            f"{r['speedup']:.2f}x",
        )
    console.print(table)
    console.print(f"[bold]{verdict(report)}[/]")
    publish(report, markdown(report), args.out, plot, args.plots / f"scaling{suffix}.png", console)


if __name__ == "__main__":
    main()
