"""A FeatureRouter stage trains in a Fabric loop (`fit_head`): it must take exactly the Trainer's steps."""

import csv
import hashlib
from dataclasses import replace

import lightning as L
import pytest
import torch

from moe_unlearn.config import load_config
from moe_unlearn.data.datamodule import ExampleDataModule, feature_dataset, stack_collate
from moe_unlearn.data.records import Record
from moe_unlearn.models.router import FeatureRouter
from moe_unlearn.training.modules import RouterStage
from moe_unlearn.training.trainer import balanced_weights, configure_torch, fit, fit_head
from tests.conftest import TINY


def stage_inputs(n_records: int = 40, n_experts: int = 3, probes: int = 5, d: int = 32):
    g = torch.Generator().manual_seed(7)
    records = [Record(id=f"r{i:03d}", text="", source="s") for i in range(n_records)]
    labels = [i % n_experts for i in range(n_records)]
    features = {r.id: torch.randn(probes, d, generator=g) for r in records}
    return records, labels, features


def trained_stage(cfg, fitter, log_dir) -> tuple[str, RouterStage]:
    records, labels, features = stage_inputs(d=cfg.model.expert.d_model)
    L.seed_everything(3, verbose=False)
    previous = FeatureRouter(cfg.model.router, cfg.model.expert.d_model, 2)
    anchor = {k: v.clone() for k, v in previous.state_dict().items()}
    fisher = {k: torch.rand(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in anchor.items()}
    router = previous.grow(torch.Generator().manual_seed(5))
    stage = RouterStage(router, cfg.train.router, anchor, fisher, cfg.train.router.ewc_lambda)
    data = ExampleDataModule(feature_dataset(records, labels, features), cfg.train.router.batch_size, 11, stack_collate)
    fitter(stage, data, cfg, cfg.train.router, log_dir, "router-2")
    digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in router.state_dict().values()))
    return digest.hexdigest(), stage


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.router.max_epochs=2", "train.router.batch_size=8", "train.router.head_min_steps=0"],  # warm-up, cosine
        ["train.router.max_steps=7", "train.router.batch_size=8", "train.router.grad_clip=0.05"],  # mid-epoch stop
        ["train.router.max_epochs=4", "train.router.batch_size=8", "train.router.head_min_steps=20"],  # floor met
    ],
)
def test_the_feature_loop_trains_the_same_weights_as_the_trainer(tmp_path, overrides):
    cfg = load_config(TINY, ["trainer.progress_bar=false", "trainer.log_every_n_steps=2", *overrides])
    configure_torch(cfg)
    by_trainer, _ = trained_stage(cfg, fit, tmp_path / "trainer")
    by_loop, _ = trained_stage(cfg, fit_head, tmp_path / "loop")
    assert by_loop == by_trainer

    def steps(root):
        with (root / "router-2" / "metrics.csv").open() as f:
            return [(int(row["step"]), row["train/ce"]) for row in csv.DictReader(f)]

    logged = steps(tmp_path / "loop")
    assert [s for s, _ in logged] == [s for s, _ in steps(tmp_path / "trainer")]
    assert logged and all(float(ce) > 0 for _, ce in logged)


def test_a_small_stage_takes_the_step_floor_in_more_epochs(tmp_path):
    """A stage whose epochs hold fewer steps than train.router.head_min_steps trains until the floor."""
    overrides = ["train.router.max_epochs=2", "train.router.max_steps=-1", "train.router.batch_size=8"]
    overrides.append("trainer.log_every_n_steps=1")

    def logged_steps(floor: int) -> list[int]:
        cfg = load_config(TINY, ["trainer.progress_bar=false", *overrides, f"train.router.head_min_steps={floor}"])
        configure_torch(cfg)
        trained_stage(cfg, fit_head, tmp_path / str(floor))
        with (tmp_path / str(floor) / "router-2" / "metrics.csv").open() as f:
            return [int(row["step"]) for row in csv.DictReader(f)]

    epochs_only = logged_steps(0)
    assert 0 < len(epochs_only) < 23
    assert logged_steps(23) == list(range(23))


def test_balanced_weights_give_every_expert_the_same_total_weight():
    labels = [2] * 600 + [0] * 160 + [1] * 160  # a stage's own records outnumber each earlier expert's
    weights = balanced_weights(labels, 4)  # expert 3 has no records here
    counts = torch.bincount(torch.tensor(labels), minlength=4).float()
    totals = weights * counts
    assert torch.allclose(totals[:3], totals[0].expand(3)) and weights[3] == 0
    assert torch.isclose(totals.sum(), torch.tensor(float(len(labels))))  # mean weight 1 per record


def test_a_balanced_stage_learns_an_outnumbered_expert_that_an_unweighted_one_gives_up(tmp_path):
    """An expert outnumbered 20 to 1 in a stage (replay's share at large K is far smaller than the
    stage's own): the unweighted loss routes its records to the majority, the balanced one learns it."""
    g = torch.Generator().manual_seed(0)
    d, centre = 16, torch.randn(2, 16, generator=g)
    labels = [1] * 400 + [0] * 20
    features = {f"r{i}": centre[y] * 0.5 + torch.randn(3, d, generator=g) for i, y in enumerate(labels)}
    records = [Record(id=f"r{i}", text="", source="s") for i in range(len(labels))]
    minority = torch.stack([features[r.id] for r, y in zip(records, labels, strict=True) if y == 0])
    cfg = load_config(TINY, ["trainer.progress_bar=false"])
    configure_torch(cfg)
    optim = replace(cfg.train.router, max_steps=60, lr=0.01)

    def minority_recall(weights, name):
        L.seed_everything(3, verbose=False)
        router = FeatureRouter(cfg.model.router, d, 2)
        data = ExampleDataModule(feature_dataset(records, labels, features), 32, 11, stack_collate)
        fit_head(RouterStage(router, optim, {}, {}, 0.0, weights), data, cfg, optim, tmp_path, name)
        with torch.no_grad():
            return (router(minority).argmax(-1) == 0).float().mean().item()

    # Here about 0.9 against 0.25: a wide margin, not one CPU's numerics.
    assert minority_recall(balanced_weights(labels, 2), "balanced") > minority_recall(None, "plain") + 0.2
