"""What a user sees of training: metrics in metrics.csv and the progress bar, every `log_every_n_steps` steps."""

import csv

import pytest

from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.data.corpus import generate_corpus
from moe_unlearn.data.datamodule import ExampleDataModule, expert_dataset
from moe_unlearn.rundir import read_current, version_dir
from moe_unlearn.training.trainer import TrainingBar, configure_torch, train_expert
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


@pytest.mark.parametrize(
    ("overrides", "moves"),
    [
        (["train.expert.max_steps=7"], [3, 6, 7]),  # stopped by max_steps mid-epoch: the bar ends on step 7
        (["train.expert.max_steps=-1", "train.expert.max_epochs=1"], None),  # one whole epoch
    ],
)
def test_progress_bar_moves_every_n_steps_and_ends_on_the_last_batch(tmp_path, monkeypatch, overrides, moves):
    """The bar shows progress every `log_every_n_steps` batches (when its metrics change), not on every
    batch, which cost ~5% of a step, and always ends on the last batch trained."""
    seen = []
    update = TrainingBar._update

    def recording(self, bar_id, current, *args, **kwargs):
        if bar_id is not None and bar_id == self.train_progress_bar_id:
            seen.append(current)
        return update(self, bar_id, current, *args, **kwargs)

    monkeypatch.setattr(TrainingBar, "_update", recording)
    cfg = load_config(TINY, ["trainer.progress_bar=true", "trainer.log_every_n_steps=3", *overrides])
    configure_torch(cfg)
    records = generate_corpus(1, 60, 0)
    train_expert(cfg, "recipes", records, tmp_path)
    batches = len(ExampleDataModule(expert_dataset(records, 64), 16, 0).train_dataloader())
    expected = moves or [*range(3, batches + 1, 3), *([] if batches % 3 == 0 else [batches])]
    assert seen[-len(expected) :] == expected and set(seen) == set(expected)
