"""Experts trained on separate machines: `train.experts=[...]` per run directory, `expert export` /
`expert import` to move them, router stages on one machine; the result equals one process's."""

import hashlib
import json

import pytest

from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.rundir import read_current, version_dir
from tests.conftest import TINY, cli


def test_experts_trained_on_two_machines_equal_a_single_process_training(tiny_run_dir, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"  # machines A and B train experts, C the router
    for run_dir, experts in [(a, "[recipes]"), (b, "[weather,code]")]:
        trained = cli("train", "--config", TINY, f"train.experts={experts}", "--run-dir", run_dir, "--json")
        assert trained.returncode == 0, trained.stderr
        partial = json.loads(trained.stdout)
        assert partial["live"] is False and read_current(run_dir) is None  # nothing served from half a model
        assert partial["trained"] == [f"experts/{e}.safetensors" for e in experts.strip("[]").split(",")]
        assert "router/stage_0.safetensors" in partial["remaining"]
    for run_dir, expert in [(a, "recipes"), (b, "weather"), (b, "code")]:
        exported = cli("expert", "export", expert, "--out", tmp_path / f"{expert}.expert", "--run-dir", run_dir)
        assert exported.returncode == 0, exported.stderr
    for expert in ("code", "recipes", "weather"):  # any order
        imported = cli("expert", "import", tmp_path / f"{expert}.expert", "--config", TINY, "--run-dir", c, "--json")
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["live"] is False and read_current(c) is None
    assert json.loads(imported.stdout)["remaining"] == [f"router/stage_{i}.safetensors" for i in range(3)]

    trained = cli("train", "--config", TINY, "--run-dir", c)
    assert trained.returncode == 0, trained.stderr
    assert "training expert" not in trained.stderr and trained.stderr.count("training router-stage") == 3
    assert "imported 3: experts/recipes.safetensors" in " ".join(trained.stdout.split())

    ours, reference = Run(c).info()["manifest"], Run(tiny_run_dir).info()["manifest"]
    assert ours["experts"] == reference["experts"] and ours["files"].keys() == reference["files"].keys()
    for path, entry in reference["files"].items():
        data = (version_dir(c, ours["version"]) / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == ours["files"][path]["sha256"], path
        assert ours["files"][path]["lineage"] == entry["lineage"], path
        assert ("imported" in ours["files"][path]) == path.startswith("experts/"), path
    assert ours["files"]["experts/recipes.safetensors"]["imported"]["from"] == str(a.resolve())
    assert sorted(p.name for p in version_dir(c, ours["version"]).iterdir()) == [
        "config.yaml", "experts", "logs", "manifest.json", "router",
    ]  # fmt: skip
    assert Run(c).score("Preheat the oven.") == Run(tiny_run_dir).score("Preheat the oven.")


def test_export_carries_the_lineage_of_the_served_file(tiny_run_dir, tmp_path):
    assert cli("expert", "export", "weather", "--out", tmp_path / "w", "--run-dir", tiny_run_dir).returncode == 0
    manifest = Run(tiny_run_dir).info()["manifest"]
    entry = manifest["files"]["experts/weather.safetensors"]
    bundle = json.loads((tmp_path / "w" / "bundle.json").read_text())
    assert bundle["expert"] == "weather" and bundle["file"] == entry
    assert set(entry) >= {"sha256", "lineage", "config_sha256", "records_sha256", "environment"}
    assert entry["environment"]["threads"] == load_config(TINY).trainer.threads and entry["environment"]["torch"]
    assert (tmp_path / "w" / "expert.safetensors").read_bytes() == (
        version_dir(tiny_run_dir, 1) / "experts/weather.safetensors"
    ).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no partial directory left behind


def test_importing_the_served_expert_changes_nothing(tiny_run_dir, tiny_copy, tmp_path):
    cli("expert", "export", "code", "--out", tmp_path / "code", "--run-dir", tiny_run_dir)
    result = cli("expert", "import", tmp_path / "code", "--config", TINY, "--run-dir", tiny_copy)
    assert result.returncode == 0, result.stderr
    assert "already up to date in version 1" in result.stdout
    assert sorted(p.name for p in (tiny_copy / "versions").iterdir()) == ["1"]


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case, message",
    [
        ("tampered tensors", "corrupt model file"),
        ("other config", "train.expert.lr: 0.002 in the bundle, 0.001 here"),
        ("other records", "was trained on 56 records"),
        ("not a bundle", "no expert bundle at"),
        ("unknown expert", "unknown expert 'nope'"),
        ("untrained expert", "has no trained weights"),
        ("existing output", "already exists"),
    ],
)
def test_bad_exports_and_imports_are_one_line_and_exit_2(case, message, tiny_run_dir, tiny_copy, tmp_path):
    bundle = tmp_path / "recipes.expert"
    cli("expert", "export", "recipes", "--out", bundle, "--run-dir", tiny_run_dir)
    command = ["expert", "import", bundle, "--config", TINY, "--run-dir", tmp_path / "fresh"]
    if case == "tampered tensors":
        _tamper(bundle / "expert.safetensors")
    elif case == "other config":
        command.append("train.expert.lr=0.001")
    elif case == "other records":
        (tmp_path / "more.txt").write_text("Stir the soup.\n\nBake the bread.\n\nSalt the fish.\n")
        Run(tiny_copy).ingest("recipes", [tmp_path / "more.txt"])
        command[-1] = tiny_copy
    elif case == "not a bundle":
        command[2] = tmp_path
    elif case == "unknown expert":
        command = ["expert", "export", "nope", "--out", tmp_path / "x", "--run-dir", tiny_run_dir]
    elif case == "untrained expert":
        Run(tmp_path / "empty").init(TINY)
        command = ["expert", "export", "recipes", "--out", tmp_path / "x", "--run-dir", tmp_path / "empty"]
    elif case == "existing output":
        command = ["expert", "export", "recipes", "--out", bundle, "--run-dir", tiny_run_dir]
    result = cli(*command)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "fresh" / "versions").exists()  # a refused import writes nothing


def test_expert_help_lists_export_and_import():
    result = cli("expert", "--help")
    assert result.returncode == 0 and "export" in result.stdout and "import" in result.stdout
