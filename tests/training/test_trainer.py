"""A FeatureRouter stage trains in a Fabric loop (`fit_head`): it must take exactly the Trainer's steps."""

import csv
import hashlib

import lightning as L
import pytest
import torch

from moe_unlearn.config import load_config
from moe_unlearn.data.datamodule import ExampleDataModule, feature_dataset, stack_collate
from moe_unlearn.data.records import Record
from moe_unlearn.models.router import FeatureRouter
from moe_unlearn.training.modules import RouterStage
from moe_unlearn.training.trainer import configure_torch, fit, fit_head
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
        ["train.router.max_epochs=2", "train.router.batch_size=8"],  # warm-up, cosine, several epochs
        ["train.router.max_steps=7", "train.router.batch_size=8", "train.router.grad_clip=0.05"],  # mid-epoch stop
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
