"""The run directory's format, as run directories made by earlier releases hold it: the names are spelt
out here (not taken from moe_unlearn.rundir) so that renaming one fails this test instead of silently
orphaning every existing run directory."""

import json
import shutil

import pytest

from moe_unlearn import Run, UserError, rundir

# What a trained run directory held before rundir.py existed (release of 2026-12-02 and earlier).
TOP = {
    "registry.db",
    "current",
    "lock",
    "versions",
    "hmac.key",
}  # hmac.key: since issue [4/5] (the key out of registry.db)
VERSION = {"config.yaml", "manifest.json", "experts", "router"}
MANIFEST_KEYS = {"version", "parent", "config_sha256", "config_file_sha256", "environment", "experts", "files"}


def test_a_trained_run_directory_has_the_format_earlier_releases_wrote(tiny_run_dir):
    assert {p.name for p in tiny_run_dir.iterdir()} <= TOP | {"registry.db-wal", "registry.db-shm"}
    current = (tiny_run_dir / "current").read_text().strip()
    vdir = tiny_run_dir / "versions" / current
    assert VERSION <= {p.name for p in vdir.iterdir()} <= VERSION | {"logs"}  # training's logs, until a scrub
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert set(manifest) >= MANIFEST_KEYS
    experts = manifest["experts"]
    assert {p.name for p in (vdir / "experts").iterdir()} == {f"{e}.safetensors" for e in experts}
    assert {p.name for p in (vdir / "router").iterdir()} == {f"stage_{i}.safetensors" for i in range(len(experts))}
    assert set(manifest["files"]) == {f"experts/{e}.safetensors" for e in experts} | {
        f"router/stage_{i}.safetensors" for i in range(len(experts))
    }


def test_the_layout_module_reads_that_format(tiny_run_dir):
    n = rundir.read_current(tiny_run_dir)
    assert rundir.version_dir(tiny_run_dir, n) == tiny_run_dir / "versions" / str(n)
    assert rundir.registry_path(tiny_run_dir) == tiny_run_dir / "registry.db"
    manifest = rundir.read_manifest(rundir.version_dir(tiny_run_dir, n))
    assert {rundir.expert_file(e) for e in manifest["experts"]} <= set(manifest["files"])
    assert rundir.stray_files(tiny_run_dir) in ([], [rundir.version_dir(tiny_run_dir, n) / "logs"])


def test_a_file_off_the_allow_list_is_a_stray(tiny_copy):
    (tiny_copy / "notes.txt").write_text("x")
    (tiny_copy / "versions" / "7").mkdir()
    strays = set(rundir.stray_files(tiny_copy)) - {rundir.version_dir(tiny_copy, 1) / "logs"}
    assert strays == {tiny_copy / "notes.txt", tiny_copy / "versions" / "7"}


def test_opening_a_missing_run_directory_without_a_config_creates_nothing(tmp_path):
    with pytest.raises(UserError, match="no run directory"):
        rundir.open_registry(tmp_path / "nope", None)
    assert not (tmp_path / "nope").exists()


def test_a_run_directory_written_in_that_format_by_hand_still_loads_and_scores(tiny_run_dir, tmp_path):
    """Copying files around (a backup restored, a directory moved) keeps a run directory usable."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run_dir, moved)
    assert Run(moved).score("Light rain in Lisbon")["version"] == Run(tiny_run_dir).score("Light rain")["version"]
