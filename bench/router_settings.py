"""Benchmark: router stage settings against the mixture's held-out bits per byte (not a test).

Takes a trained run directory (its experts are kept), re-trains only the router stages with the given
config overrides, and prints the composed model's held-out bits per byte per source, their mean, the
router's top-1 accuracy at 16/32/64-byte prefixes and the stages' training seconds. Nothing is written
to the run directory.

    .venv/bin/python train.py --run-dir checkpoints/default data.corpus.canaries=4 data.corpus.canary_repeats=10
    .venv/bin/python -m bench.router_settings --run-dir checkpoints/default train.router.max_epochs=1 \
        train.router.prefix_bytes=96
"""

import argparse
import tempfile
import time
from pathlib import Path

from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.models.loading import compose
from moe_unlearn.rundir import read_current, read_manifest, version_dir
from moe_unlearn.storage.versions import load_tensors
from moe_unlearn.training.evaluate import evaluate
from moe_unlearn.training.plan import plan
from moe_unlearn.training.trainer import configure_torch, train_router_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("checkpoints/default"))
    parser.add_argument("overrides", nargs="*", help="config overrides on top of the run's config")
    args = parser.parse_args()
    run = Run(args.run_dir)
    vdir = version_dir(args.run_dir, read_current(args.run_dir))
    manifest = read_manifest(vdir)
    cfg = load_config(vdir / "config.yaml", ["trainer.progress_bar=false", *args.overrides])
    configure_torch(cfg)
    registry = run.registry
    jobs, heldout = plan(registry, cfg)
    experts = {
        j.expert: load_tensors(vdir / j.path, manifest["files"][j.path]["sha256"]) for j in jobs if j.kind == "expert"
    }
    started, stage = time.perf_counter(), None
    with tempfile.TemporaryDirectory() as logs:
        for job in jobs:
            if job.kind == "router-stage":
                stage = train_router_stage(cfg, job.stage, job.expert, stage, job.records, job.labels, Path(logs))
    seconds = time.perf_counter() - started
    ev = evaluate(compose(cfg, experts, stage[0]), heldout, registry.source_map())
    bpb = ev["heldout_bpb"]
    print(" ".join(args.overrides) or "(run's config)")
    print(
        "  held-out bits/byte:",
        ", ".join(f"{s} {v:.3f}" for s, v in bpb.items()),
        f"| mean {sum(bpb.values()) / len(bpb):.3f}",
    )
    print("  router top-1 at 16/32/64 bytes:", " / ".join(f"{v:.1%}" for v in ev["router_top1"].values()))
    print(f"  {len(jobs) // 2} router stages: {seconds:.1f} s")


if __name__ == "__main__":
    main()
