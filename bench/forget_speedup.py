"""Benchmark: how much cheaper exact forgetting is than retraining from scratch (not a test).

For each K it trains the default config with K built-in domains (one expert each), then in the same
run directory forgets 10 trained-on records from each source in turn, timing every forget, and
drops each single-source expert (each on a fresh copy of the trained directory). Speedups compare
the wall time of a whole forget or drop command (loading, planning, training, scrub, certificate)
with the training time alone of a full retrain (sum over its experts and router stages), the
conservative comparison. Prints a Markdown table and writes the raw figures as JSON.

    .venv/bin/python -m bench.forget_speedup --k 4 8 16 --out bench/results/forget_speedup.json
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from statistics import mean

from rich.console import Console

from bench.common import timed
from moe_unlearn import Run
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.storage.builds import served_config


def bench_k(k: int, work: Path, overrides: list[str], console: Console) -> dict:
    run_dir = work / f"k{k}"
    run = Run(run_dir, console=console)
    manifest, full_wall = timed(run.train, None, [f"data.corpus.domains={k}", "trainer.progress_bar=false", *overrides])
    experts = manifest["experts"]
    expert_s = [manifest["files"][f"experts/{e}.safetensors"]["train_seconds"] for e in experts]
    stage_s = [manifest["files"][f"router/stage_{i}.safetensors"]["train_seconds"] for i in range(k)]
    # The baseline is the training time alone (no corpus writing, no evaluation): the conservative one.
    full = sum(expert_s) + sum(stage_s)
    pristine = work / f"k{k}-pristine"
    shutil.copytree(run_dir, pristine)

    drops = {}
    for expert in experts:
        copy = work / f"k{k}-drop"
        shutil.copytree(pristine, copy)
        _, seconds = timed(Run(copy, console=console).drop, expert=expert)
        drops[expert] = seconds
        shutil.rmtree(copy)

    cfg = served_config(run_dir)
    forgets = {}
    for expert in experts:  # one source per expert
        records = run.registry.records([expert])
        ids = [r.id for r in records if not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)][:10]
        cert, seconds = timed(run.forget, records=ids)
        assert cert["retrained"]["experts"] == [expert]
        forgets[expert] = seconds
    speedups = {e: full / s for e, s in forgets.items()}
    return {
        "k": k,
        "full_retrain_s": round(full, 1),
        "full_train_command_wall_s": round(full_wall, 1),
        "expert_train_s_mean": round(mean(expert_s), 1),
        "router_stage_s_max": round(max(stage_s[1:] or [0]), 2),
        "router_stage_s_mean": round(mean(stage_s[1:] or [0]), 2),
        "router_stage_share_of_expert_max": round(max(stage_s[1:] or [0]) / mean(expert_s), 4),
        "forget_s": {e: round(s, 1) for e, s in forgets.items()},
        "forget_speedup_mean": round(mean(speedups.values()), 2),
        "forget_speedup_worst": round(min(speedups.values()), 2),
        "forget_speedup_target": round(0.8 * k, 2),
        "drop_s": {e: round(s, 1) for e, s in drops.items()},
        "drop_speedup_min": round(full / max(drops.values()), 1),
        "drop_speedup_mean": round(mean(full / s for s in drops.values()), 1),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| K | full retrain (s) | expert (s) | max router stage / expert | forget (s) mean "
        "| forget speedup mean (target 0.8K) | worst (first stage) | drop (s) mean / max | drop speedup min / mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['k']} | {r['full_retrain_s']} | {r['expert_train_s_mean']} | "
            f"{r['router_stage_share_of_expert_max']:.1%} | {mean(r['forget_s'].values()):.1f} | "
            f"{r['forget_speedup_mean']}x ({r['forget_speedup_target']}x) | {r['forget_speedup_worst']}x | "
            f"{mean(r['drop_s'].values()):.1f} / {max(r['drop_s'].values()):.1f} | "
            f"{r['drop_speedup_min']}x / {r['drop_speedup_mean']}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 16], help="numbers of experts")
    parser.add_argument("--out", type=Path, default=Path("bench/results/forget_speedup.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.corpus.records_per_domain=500")
    args = parser.parse_args()
    console = Console(stderr=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-bench-") as tmp:
        for k in args.k:
            results.append(bench_k(k, Path(tmp), args.overrides, console))
            console.print(json.dumps(results[-1], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"overrides": args.overrides, "results": results}, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
