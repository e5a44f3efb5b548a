"""Checkpoints: safetensors + manifest, checked on load, `current` as the one pointer."""

import json
import os

import pytest
import torch

from moe_unlearn import Run, UserError
from moe_unlearn.config import load_config
from moe_unlearn.rundir import read_current, switch_current, version_dir
from moe_unlearn.storage.versions import load_tensors, save_tensors, sha256_bytes
from tests.cli.test_cli import cli
from tests.conftest import TINY


def test_version_layout_and_manifest(tiny_run_dir):
    vdir = version_dir(tiny_run_dir, 1)
    assert read_current(tiny_run_dir) == 1
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "experts/code.safetensors", "experts/recipes.safetensors", "experts/weather.safetensors",
        "router/stage_0.safetensors", "router/stage_1.safetensors", "router/stage_2.safetensors",
    ]  # fmt: skip
    for entry in manifest["files"].values():
        assert set(entry) >= {"sha256", "records_sha256", "config_sha256", "lineage", "records"}
    env = manifest["environment"]
    assert env["threads"] == load_config(TINY).trainer.threads and env["torch"] and env["cpu_flags_sha256"]
    assert not list(tiny_run_dir.rglob("*.ckpt")) and not list(tiny_run_dir.rglob("*.pt"))


@pytest.mark.parametrize("victim", ["experts/weather.safetensors", "router/stage_1.safetensors", "config.yaml"])
def test_corrupted_file_is_detected_and_named(tiny_copy, victim):
    path = version_dir(tiny_copy, 1) / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"corrupt .*{victim}"):
        Run(tiny_copy).score("hello")
    result = cli("score", "hello", "--run-dir", tiny_copy)
    assert result.returncode == 2 and victim in result.stderr and "Traceback" not in result.stderr


def test_missing_file_is_detected_and_named(tiny_copy):
    (version_dir(tiny_copy, 1) / "experts/code.safetensors").unlink()
    with pytest.raises(UserError, match="missing model file .*experts/code.safetensors"):
        Run(tiny_copy).generate("a", max_new_bytes=1)


def test_corrupt_manifest_and_pointer(tiny_copy):
    (version_dir(tiny_copy, 1) / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt manifest"):
        Run(tiny_copy).score("hello")
    (tiny_copy / "current").write_text("garbage")
    with pytest.raises(UserError, match="corrupt pointer"):
        Run(tiny_copy).score("hello")


def test_switch_current_is_an_atomic_replace(tmp_path):
    switch_current(tmp_path, 3)
    switch_current(tmp_path, 4)
    assert read_current(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]  # no temporary left behind


def test_saving_over_a_hard_link_leaves_the_other_name_alone(tmp_path):
    # a build links the files it reuses to the served version's: retraining one must not write through
    served, building = tmp_path / "served.safetensors", tmp_path / "building.safetensors"
    sha = save_tensors(served, {"w": torch.zeros(3)})
    os.link(served, building)
    save_tensors(building, {"w": torch.ones(3)})
    assert load_tensors(served, sha)["w"].sum() == 0
    assert load_tensors(building, sha256_bytes(building.read_bytes()))["w"].sum() == 3
