"""`trainer.compile`: the experts' forward pass through torch.compile, same saved tensors' names."""

import os
import shutil

import pytest
import torch

from moe_unlearn.config import load_config
from moe_unlearn.data.corpus import generate_corpus
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.training.trainer import configure_torch, train_expert
from tests.conftest import REPO, TINY


@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")), reason="torch.compile on a CPU needs g++")
def test_a_compiled_expert_trains_and_saves_the_plain_models_tensors(tmp_path):
    cfg = load_config(TINY, ["trainer.compile=true", "train.expert.max_steps=3", "trainer.progress_bar=false"])
    configure_torch(cfg)
    records = generate_corpus(1, 40, cfg.seed)
    compiled = train_expert(cfg, "weather", records, tmp_path / "compiled")
    plain = train_expert(load_config(TINY, ["train.expert.max_steps=3"]), "weather", records, tmp_path / "plain")
    assert list(compiled) == list(plain)  # no `_orig_mod.` prefixes: the version loads as any other
    ByteTransformer(cfg.model.expert).load_state_dict(compiled)
    drift = max((compiled[k] - plain[k]).abs().max().item() for k in plain)
    assert drift < 1e-3  # the same training, up to the fused kernels' rounding
    assert all(torch.isfinite(t).all() for t in compiled.values())


@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")), reason="torch.compile on a CPU needs g++")
def test_the_gpu_config_runs_unchanged_on_a_cpu(tmp_path):
    """dictd-gpu.yaml's trainer settings (auto accelerator, bf16-mixed, compile) on this CPU, at a tiny size."""
    tiny = ["model.expert.n_layer=1", "model.expert.d_model=32", "model.expert.n_head=2", "model.expert.block_size=64"]
    steps = ["train.expert.max_steps=2", "train.expert.batch_size=2", "trainer.progress_bar=false"]
    cfg = load_config(REPO / "configs/experiment/dictd-gpu.yaml", [*tiny, *steps])
    assert (cfg.trainer.precision, cfg.trainer.compile, cfg.trainer.accelerator) == ("bf16-mixed", True, "auto")
    configure_torch(cfg)
    weights = train_expert(cfg, "weather", generate_corpus(1, 20, cfg.seed), tmp_path)
    ByteTransformer(cfg.model.expert).load_state_dict(weights)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())  # bf16 compute only
