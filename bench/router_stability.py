"""Benchmark: does the router remember earlier domains as experts are added one at a time? (not a test)

Creates a run directory with K built-in domains (one expert each) in a temporary folder and trains
only the router stages, in order, as `plan` lays them out, once per variant: replay + EWC (ours: the
config's replay_records and ewc_lambda), replay only (ewc_lambda=0), EWC only (replay_records=0: a
stage sees only its own expert's records) and neither. No expert is trained: routing accuracy needs
the router alone. After each stage (K = 2..max) it scores top-1 routing accuracy at each prefix
length on the held-out records of every domain so far (`router_accuracy`, `data.eval_records` per
domain). With a base (the default: --base-records, a public share of every domain in source `public`,
as bench/scaling.py lays it out) the base is trained once, the base features of every training and
held-out record are computed once, and the stages are the FeatureRouter's heads on them, as `train`
builds them; --base-records 0 measures the byte router of the first design.

Points lost by a domain = its accuracy right after its own stage (the first domain: after
stage 2, the first with a choice) minus its accuracy after the last stage; peak -> final = its best
accuracy from its own stage on minus the last (forgetting that later gains cannot hide). Prints
Markdown tables, the target (ours loses at most 1 point on average) and a warning when the variants
barely differ; writes the JSON and a plot (accuracy on earlier domains against K, one panel per
prefix length).

    .venv/bin/python -m bench.router_stability --k 16                      # base of 2,000 records, FeatureRouter
    .venv/bin/python -m bench.router_stability --k 16 --base-records 0     # byte router, no base
    .venv/bin/python -m bench.router_stability --quick --prefixes 8 16 32   # K = 8, 1,000 records a domain
    .venv/bin/python -m bench.router_stability --data data/dictd --out bench/results/router_stability_dictd.json
"""

import argparse
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

import torch

from bench.common import (
    command,
    ingest_dictd,
    machine,
    machine_line,
    report_defaults,
    report_options,
    save_figure,
    timed,
    write_report,
)
from moe_unlearn import Run
from moe_unlearn.config import Config, load_config
from moe_unlearn.data.dictd import DICTIONARIES
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import FeatureRouter, Router, feature_size
from moe_unlearn.training.evaluate import PREFIX_LENGTHS, router_accuracy
from moe_unlearn.training.features import features_tensors, read_features, record_features
from moe_unlearn.training.plan import plan
from moe_unlearn.training.trainer import configure_torch, train_base, train_router_stage

VARIANTS = {  # name -> overrides on top of the config
    "replay + EWC (ours)": [],
    "replay only": ["train.router.ewc_lambda=0"],
    "EWC only": ["train.router.replay_records=0"],
    "neither": ["train.router.replay_records=0", "train.router.ewc_lambda=0"],
}
OURS = "replay + EWC (ours)"
TARGET_POINTS = 1.0  # ours may lose at most this much on earlier domains, on average
QUICK = ["data.corpus.records_per_domain=1000"]
DEFAULT_CONFIG = Path("configs/default.yaml")
DEFAULT_BASE_RECORDS = 2000  # in all, split over the K domains (bench/scaling.py's default)


class Base:
    """The trained base and the features a FeatureRouter reads: every training record's (at the probe
    lengths, as `train` stores them) and every held-out record's after each measured prefix."""

    def __init__(self, cfg: Config, jobs: list, heldout: dict[str, list], prefixes: list[int], logs: Path):
        [job] = [j for j in jobs if j.kind == "base"]
        started = time.perf_counter()
        self.model = ByteTransformer(cfg.model.expert)
        self.model.load_state_dict(train_base(cfg, job.records, logs))
        self.model.eval()
        self.train_seconds = round(time.perf_counter() - started, 1)
        records = [r for j in jobs if j.kind == "router-features" for r in j.records]  # every expert's
        tensors, _ = features_tensors(self.model, records, cfg.train.router.prefix_bytes, {})
        self.features = read_features(tensors)
        self.heldout = {
            p: {e: torch.stack([self.prefix_feature(r.text, p) for r in recs]) for e, recs in heldout.items() if recs}
            for p in prefixes
        }

    @torch.no_grad()
    def prefix_feature(self, text: str, prefix: int) -> torch.Tensor:
        return record_features(self.model, text, prefix)[-1]  # the last probe: all of the prefix


def measure(cfg: Config, weights: dict, heldout: dict[str, list], prefixes: list[int], base: Base | None) -> dict:
    """{prefix: {expert: top-1 accuracy}} of the router `weights` over the experts it has outputs for."""
    experts = list(heldout)[: weights["head.bias"].shape[0]]
    if base is not None:
        router = FeatureRouter(cfg.model.router, feature_size(cfg.model.expert.d_model), len(experts)).eval()
        router.load_state_dict(weights)
        with torch.no_grad():
            top1 = {p: {e: router(base.heldout[p][e]).argmax(-1) for e in experts} for p in prefixes}
        return {p: {e: (top1[p][e] == i).float().mean().item() for i, e in enumerate(experts)} for p in prefixes}
    router = Router(cfg.model.router, n_experts=len(experts))
    router.load_state_dict(weights)
    router.eval()
    return {
        p: {e: router_accuracy(router, heldout[e], [i] * len(heldout[e]), p) for i, e in enumerate(experts)}
        for p in prefixes
    }


def run_variant(
    cfg: Config, registry, heldout: dict[str, list], prefixes: list[int], logs: Path, base: Base | None
) -> dict:
    """Train every router stage of `plan` in order; accuracy after each stage from the second on."""
    jobs, _ = plan(registry, cfg)
    stages = [j for j in jobs if j.kind == "router-stage"]
    if cfg.train.router.replay_records == 0:  # no replay: a stage trains on its own expert's records alone
        for j in stages:
            if set(j.labels) != {j.stage} or not {r.source for r in j.records} <= set(registry.sources_of(j.expert)):
                raise SystemExit(f"replay_records=0, yet router stage {j.stage} trains on other experts' records")
    accuracy, seconds, previous = {}, [], None
    for job in stages:
        features = base.features if base else None
        previous, s = timed(
            train_router_stage, cfg, job.stage, job.expert, previous, job.records, job.labels, logs, features
        )
        seconds.append(round(s, 2))
        if job.stage >= 1:
            accuracy[job.stage + 1] = measure(cfg, previous[0], heldout, prefixes, base)
            scores = ", ".join(f"{p}: {mean(a.values()):.1%}" for p, a in accuracy[job.stage + 1].items())
            print(
                f"  K={job.stage + 1} ({len(job.records)} records, {seconds[-1]:.1f} s) all domains {scores}",
                flush=True,
            )
    return {"stage_seconds": seconds, "accuracy": accuracy}


def run_joint(
    cfg: Config, registry, heldout: dict[str, list], prefixes: list[int], logs: Path, base: Base | None
) -> dict:
    """The reference the stages aim at: one router with every output trained at once (a single stage,
    no EWC) on each stage's own records, the same router, features and settings. What it misses at a
    prefix length is the domains' ambiguity there, not forgetting. Returns {prefix: {expert: top-1}}."""
    jobs, _ = plan(registry, cfg)
    stages = [j for j in jobs if j.kind == "router-stage"]
    own = [(r, j.stage) for j in stages for r, label in zip(j.records, j.labels, strict=True) if label == j.stage]
    k = len(stages)
    torch.manual_seed(cfg.seed)
    if base is not None:
        fresh = FeatureRouter(cfg.model.router, feature_size(cfg.model.expert.d_model), k - 1)
    else:
        fresh = Router(cfg.model.router, n_experts=k - 1)
    previous = (fresh.state_dict(), {})  # no Fisher: no EWC penalty
    records, labels = [r for r, _ in own], [label for _, label in own]
    features = base.features if base else None
    weights, _ = train_router_stage(cfg, k - 1, stages[-1].expert, previous, records, labels, logs, features)
    return measure(cfg, weights, heldout, prefixes, base)


def summarise(accuracy: dict, experts: list[str], p: int) -> dict:
    """At prefix p: mean accuracy on the earlier domains and on the new one after each addition, and
    per earlier domain the points lost (right after its own stage -> after the last) and the points
    forgotten (its best accuracy from its own stage on -> after the last; never negative)."""
    last = max(accuracy)
    earlier = {k: mean(accuracy[k][p][e] for e in experts[: k - 1]) for k in accuracy}
    new = {k: accuracy[k][p][experts[k - 1]] for k in accuracy}
    own = {e: max(i + 1, 2) for i, e in enumerate(experts[: last - 1])}  # the first, single-output stage: use K=2
    final = {e: accuracy[last][p][e] for e in own}
    lost = {e: 100 * (accuracy[k][p][e] - final[e]) for e, k in own.items()}
    forgot = {e: 100 * (max(accuracy[j][p][e] for j in range(k, last + 1)) - final[e]) for e, k in own.items()}
    worst, worst_forgot = max(lost, key=lost.get), max(forgot, key=forgot.get)
    return {
        "earlier": earlier,
        "new": new,
        "final_earlier": earlier[last],
        "final_all": mean(accuracy[last][p].values()),
        "points_lost": lost,
        "points_lost_mean": mean(lost.values()),
        "worst": {"expert": worst, "points_lost": lost[worst]},
        "peak_to_final": forgot,
        "peak_to_final_mean": mean(forgot.values()),
        "peak_to_final_worst": {"expert": worst_forgot, "points": forgot[worst_forgot]},
    }


def commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if git("status", "--porcelain") else "")


def markdown(report: dict) -> str:
    c, prefixes = report["config"], report["prefixes"]
    r = c["router"]
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}, commit {report['commit']}; wall time {report['wall_s']:.0f} s",
        f"- Command: `{report['command']}`",
        f"- Config: {c['file']} {' '.join(c['overrides'])}; K = {len(report['experts'])} domains "
        f"({c.get('corpus', 'built-in')}: {c['records_per_domain'] or 'all'} records each), "
        f"{c['eval_records']} held-out records scored per domain; {report['router']}; router stages: "
        f"{r['max_epochs']} epochs on {r['prefix_bytes']}-byte prefixes, {r['stage_records']} own records + "
        f"{r['replay_records']} replayed, EWC lambda {r['ewc_lambda']}",
        "",
        "Points lost: right after the domain's own stage -> after the last; peak -> final: its best accuracy "
        "from its own stage on -> after the last. Mean over the earlier domains, and the worst one.",
        "",
        "| variant | prefix | earlier domains after the last stage | points lost mean / worst | "
        "peak -> final mean / worst |",
        "|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        for p in prefixes:
            s = v["summary"][p]
            w, f = s["worst"], s["peak_to_final_worst"]
            lines.append(
                f"| {name} | {p} B | {s['final_earlier']:.1%} | {s['points_lost_mean']:.1f} / "
                f"{w['points_lost']:.1f} ({w['expert']}) | {s['peak_to_final_mean']:.1f} / {f['points']:.1f} "
                f"({f['expert']}) |"
            )
    if "joint" in report:
        j = report["joint"]
        lines.append(
            "| one router on every domain at once (no stages: the reference) | "
            + " / ".join(f"{p} B" for p in prefixes)
            + " | "
            + " / ".join(f"{j[p]['earlier']:.1%}" for p in prefixes)
            + " | - | - |"
        )
    for p in prefixes:
        lines += ["", f"Top-1 accuracy at {p}-byte prefixes after adding expert K: earlier domains (the new one)", ""]
        lines += ["| K | " + " | ".join(report["variants"]) + " |", "|---|" + "---|" * len(report["variants"])]
        for k in report["variants"][OURS]["summary"][p]["earlier"]:
            cells = [
                f"{v['summary'][p]['earlier'][k]:.1%} ({v['summary'][p]['new'][k]:.0%})"
                for v in report["variants"].values()
            ]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(report: dict) -> list[str]:
    ours, prefixes = report["variants"][OURS]["summary"], report["prefixes"]
    lost = {p: ours[p]["points_lost_mean"] for p in prefixes}
    ok = all(v <= TARGET_POINTS for v in lost.values())
    worst = {p: ours[p]["worst"] for p in prefixes}
    forgot = {p: ours[p]["peak_to_final_mean"] for p in prefixes}
    lines = [
        f"target: ours loses at most {TARGET_POINTS:g} point on earlier domains (mean): {'PASS' if ok else 'FAIL'} ("
        + ", ".join(f"{p} B: {v:.1f}" for p, v in lost.items())
        + ")",
        "ours, worst earlier domain: "
        + ", ".join(f"{p} B: {w['points_lost']:.1f} ({w['expert']})" for p, w in worst.items())
        + "; peak -> final mean: "
        + ", ".join(f"{p} B: {v:.1f}" for p, v in forgot.items()),
    ]
    if "joint" in report:
        gap = {p: 100 * (ours[p]["final_earlier"] - report["joint"][p]["earlier"]) for p in prefixes}
        lines.append(
            "ours' final accuracy on earlier domains minus one router trained on every domain at once "
            "(points; what stages cost beyond the domains' ambiguity): "
            + ", ".join(f"{p} B: {g:+.1f}" for p, g in gap.items())
        )
    if ok and max(max(w["points_lost"] for w in worst.values()), *forgot.values()) > TARGET_POINTS:
        lines.append(
            "NOTE: the mean passes, but single domains lose more than the target or domains forget from their peak: "
            "domains learnt late (poorly at their own stage) gain, which hides losses elsewhere."
        )
    finals = {p: [v["summary"][p]["final_earlier"] for v in report["variants"].values()] for p in prefixes}
    spread = {p: 100 * (max(f) - min(f)) for p, f in finals.items()}
    report["spread_points"] = spread
    lines.append(
        "spread of the variants' final accuracy on earlier domains: "
        + ", ".join(f"{p} B: {s:.1f} points" for p, s in spread.items())
    )
    for name, v in report["variants"].items():
        if name != OURS:
            gap = ", ".join(
                f"{p} B: {100 * (ours[p]['final_earlier'] - v['summary'][p]['final_earlier']):+.1f}" for p in prefixes
            )
            lines.append(f"ours minus {name} (final, earlier domains, points): {gap}")
    ewc_gain = [
        100 * (ours[p]["final_earlier"] - report["variants"]["replay only"]["summary"][p]["final_earlier"])
        for p in prefixes
    ]
    if max(abs(g) for g in ewc_gain) < TARGET_POINTS:
        lines.append(f"NOTE: EWC adds less than {TARGET_POINTS:g} point to replay at every prefix length here.")
    report["too_easy"] = max(spread.values()) < TARGET_POINTS
    if report["too_easy"]:
        good = min(min(f) for f in finals.values()) >= 0.9
        why = "too easy: every variant remembers" if good else "failing alike (under-trained?)"
        lines.append(
            f"WARNING: the four variants differ by less than {TARGET_POINTS:g} point, so this setting cannot tell "
            f"them apart ({why}). Make it harder (shorter --prefixes, overlapping domains) before drawing conclusions."
        )
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefixes, styles = report["prefixes"], ["-o", "-s", "--^", ":x"]  # dashed/dotted: the two often coincide
    fig, axes = plt.subplots(1, len(prefixes), figsize=(4.5 * len(prefixes), 3.8), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], prefixes, strict=True):
        for (name, v), style in zip(report["variants"].items(), styles, strict=True):
            earlier = v["summary"][p]["earlier"]
            ax.plot(list(earlier), [100 * a for a in earlier.values()], style, markersize=4, label=name)
        ax.set(title=f"{p}-byte prefixes", xlabel="experts K (after adding the K-th)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 routing accuracy on earlier domains (%)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=None, help="experts (built-in domains); default 16, 8 with --quick")
    parser.add_argument("--quick", action="store_true", help="K = 8 and 1,000 records per domain")
    parser.add_argument(
        "--prefixes",
        type=int,
        nargs="+",
        help=f"prefix lengths in bytes (default {' '.join(map(str, PREFIX_LENGTHS))}; without --quick also 8: harder)",
    )
    report_options(
        parser,
        "router_stability",
        "its five dictionaries in order (K = 5, configs/experiment/dictd.yaml) instead of built-in domains",
        plot="router_stability_k<K>.png (--data: router_stability_dictd.png)",
    )
    parser.add_argument(
        "--base-records",
        type=int,
        help=f"base records in all, split over the K domains, source `public` (default {DEFAULT_BASE_RECORDS}; "
        "0: no base, the byte router; built-in corpus only)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value), for every variant")
    args = parser.parse_args()
    if args.data and args.base_records:
        parser.error("--base-records is for the built-in corpus")
    if args.base_records is not None and args.base_records < 0:
        parser.error("--base-records must be 0 or more")
    args.prefixes = args.prefixes or [*([] if args.quick else [8]), *PREFIX_LENGTHS]
    k = args.k or (8 if args.quick else 16)
    report_defaults(args, "router_stability")
    base_records = 0 if args.data else DEFAULT_BASE_RECORDS if args.base_records is None else args.base_records
    builtin = [] if args.data else [f"data.corpus.domains={k}", *(QUICK if args.quick else [])]
    if not args.data:  # the base: a public share of the K domains (K up to 16 uses every built-in domain)
        builtin += ["data.corpus.base_domains=0", f"data.corpus.base_records={base_records // k}"]
    overrides = [*builtin, "trainer.progress_bar=false", *args.overrides]

    started = time.perf_counter()
    report = {"variants": {}, "prefixes": args.prefixes}
    with tempfile.TemporaryDirectory() as work:
        run = Run(Path(work) / "run")
        run.init(args.config, overrides)
        if args.data:
            ingest_dictd(run, args.data, DICTIONARIES, args.config, overrides)
        registry = run.registry
        experts, source_map = registry.experts(), registry.source_map()
        base = None
        if registry.base_sources():
            cfg = load_config(args.config, overrides)
            configure_torch(cfg)
            jobs, by_source = plan(registry, cfg)
            heldout = {e: [r for s, recs in by_source.items() if source_map[s] == e for r in recs] for e in experts}
            print("training the base and computing its features", flush=True)
            base = Base(cfg, jobs, heldout, args.prefixes, Path(work) / "logs" / "base")
            print(f"  base {base.train_seconds:.1f} s, {len(base.features):,} records' features", flush=True)
        report["router"] = (
            f"FeatureRouter on a base of {base_records:,} records (source `public`)" if base else "byte router, no base"
        )
        for name, extra in VARIANTS.items():
            cfg = load_config(args.config, [*overrides, *extra])
            configure_torch(cfg)
            _, by_source = plan(registry, cfg)
            heldout = {e: [r for s, recs in by_source.items() if source_map[s] == e for r in recs] for e in experts}
            print(f"{name}: {len(experts)} stages", flush=True)
            logs = Path(work) / "logs" / name.replace(" ", "_")
            result = run_variant(cfg, registry, heldout, args.prefixes, logs, base)
            result["summary"] = {p: summarise(result["accuracy"], experts, p) for p in args.prefixes}
            report["variants"][name] = {"overrides": extra, **result}
        cfg = load_config(args.config, overrides)
        configure_torch(cfg)
        _, by_source = plan(registry, cfg)
        heldout = {e: [r for s, recs in by_source.items() if source_map[s] == e for r in recs] for e in experts}
        print("one router on every domain at once (the reference)", flush=True)
        joint = run_joint(cfg, registry, heldout, args.prefixes, Path(work) / "logs" / "joint", base)
        report["joint"] = {
            p: {"earlier": mean(a[e] for e in experts[:-1]), "all": mean(a.values()), "by_expert": a}
            for p, a in joint.items()
        }
    report |= {
        "experts": experts,
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "command": command(),
        "config": {
            "file": str(args.config or DEFAULT_CONFIG),
            "overrides": overrides,
            "corpus": f"dictd ({args.data})" if args.data else "built-in",
            "records_per_domain": None if args.data else cfg.data.corpus.records_per_domain,
            "eval_records": cfg.data.eval_records,
            "router": {f: getattr(cfg.train.router, f) for f in cfg.train.router.__dataclass_fields__},
        },
        "wall_s": time.perf_counter() - started,
    }
    md = markdown(report) + "\n\n" + "\n".join(f"- {line}" for line in verdict(report))
    print()
    print(md)
    write_report(report, md, args.out)
    path = args.plots / ("router_stability_dictd.png" if args.data else f"router_stability_k{len(experts)}.png")
    plot(report, path)
    print(f"\nwrote {args.out} and {path}")


if __name__ == "__main__":
    main()
