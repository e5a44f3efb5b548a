"""Training metrics reach metrics.csv on every `log_every_n_steps`-th step, for experts and router stages."""

import csv

from moe_unlearn import Run
from moe_unlearn.storage.versions import read_current, version_dir
from tests.conftest import TINY


def logged_steps(path) -> list[int]:
    with path.open() as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_expert_and_router_stage_metrics_are_written_every_n_steps(tmp_path):
    run = Run(tmp_path / "run")
    overrides = ["trainer.log_every_n_steps=2", "train.router.max_steps=6", "train.router.batch_size=4"]
    run.train(TINY, overrides)
    logs = version_dir(run.run_dir, read_current(run.run_dir)) / "logs"
    for expert in ("recipes", "weather", "code"):  # max_steps 8
        assert logged_steps(logs / f"expert-{expert}" / "metrics.csv") == [1, 3, 5, 7]
    # Stage 0 routes to a single expert and trains nothing; the later stages train 6 steps of one epoch.
    for stage in (1, 2):
        assert logged_steps(logs / f"router-{stage}" / "metrics.csv") == [1, 3, 5]
