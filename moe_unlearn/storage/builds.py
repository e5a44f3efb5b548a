"""The life cycle of a version directory: start a build beside the served version, record each file it
finishes, continue it after a crash, make it live with one atomic switch of `current`, clean up.

    start_build -> (train or link each file, record it in progress.json) -> go_live:
        manifest written, version recorded, `before_switch` (the audit's moment), switch, old versions removed

What goes into a build (which files, trained on what) is decided by moe_unlearn.training; this module
only keeps the directory consistent, so that a crash at any point leaves the served version intact.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from moe_unlearn.config import Config, config_from_yaml, config_hash, to_yaml
from moe_unlearn.errors import UserError
from moe_unlearn.faults import crash_point
from moe_unlearn.rundir import (
    CONFIG_FILE,
    EXPERTS_DIR,
    LOGS_DIR,
    PROGRESS_FILE,
    ROUTER_DIR,
    read_current,
    read_manifest,
    switch_current,
    version_dir,
    version_numbers,
    write_manifest,
)
from moe_unlearn.storage.registry import Registry
from moe_unlearn.storage.versions import load_tensors, write_file


def served_config(run_dir: Path) -> Config | None:
    """The config of the version being served (what every rebuild must use), or None before training."""
    current = read_current(run_dir)
    return None if current is None else config_from_yaml((version_dir(run_dir, current) / CONFIG_FILE).read_text())


def served_files(run_dir: Path) -> tuple[int | None, dict]:
    """(served version, its manifest), or (None, a manifest with no files) before training."""
    current = read_current(run_dir)
    return current, read_manifest(version_dir(run_dir, current)) if current is not None else {"files": {}}


def unfinished_build(run_dir: Path, current: int | None, cfg: Config) -> tuple[int, dict]:
    """(version number to build, files already finished in it): an unfinished build of the same config
    hash (left by a crash, by `train.experts` naming a share of the experts, or by `expert import`) is
    continued, otherwise a new number after every one used so far."""
    numbers = version_numbers(run_dir)
    for v in sorted((v for v in numbers if v > (current or 0)), reverse=True):
        vdir = version_dir(run_dir, v)
        progress = vdir / PROGRESS_FILE
        if progress.is_file() and _config_hash_of(vdir) == config_hash(cfg):
            done = {}
            for path, entry in json.loads(progress.read_text()).items():
                try:
                    load_tensors(vdir / path, entry["sha256"])
                    done[path] = entry
                except UserError:  # a file cut short by the crash: train it again
                    pass
            return v, done
    return next_version(run_dir), {}


def next_version(run_dir: Path) -> int:
    """A version number after every one used so far (served, old or unfinished)."""
    return max([read_current(run_dir) or 0, *version_numbers(run_dir)]) + 1


def start_build(run_dir: Path, n: int, cfg: Config, continued: bool) -> Path:
    """The directory of version n under construction, emptied unless `continued`; its config.yaml is
    `cfg` (a continued build may have started with other non-semantic keys, e.g. train.experts)."""
    vdir = version_dir(run_dir, n)
    if not continued:
        shutil.rmtree(vdir, ignore_errors=True)
    (vdir / EXPERTS_DIR).mkdir(parents=True, exist_ok=True)
    (vdir / ROUTER_DIR).mkdir(exist_ok=True)
    (vdir / CONFIG_FILE).write_text(to_yaml(cfg))
    return vdir


def logs_dir(vdir: Path) -> Path:
    """Where a build's Lightning logs go (inside the version; removed by a forget's build)."""
    return vdir / LOGS_DIR


def record_progress(vdir: Path, done: dict) -> None:
    """Save which files of an unfinished build are finished (path -> manifest entry)."""
    _write_json(vdir / PROGRESS_FILE, done)


def add_finished_file(run_dir: Path, cfg: Config, path: str, data: bytes, entry: dict) -> int:
    """Add a file trained elsewhere (an imported expert) to the unfinished build of `cfg`, started if
    there is none, as if that build had trained it: the next build keeps it while its lineage matches.
    Returns the build's version number."""
    n, done = unfinished_build(run_dir, read_current(run_dir), cfg)
    vdir = start_build(run_dir, n, cfg, continued=bool(done))
    write_file(vdir / path, data)
    record_progress(vdir, {**done, path: {**entry, "trained_in_version": n}})
    return n


def trained_file(run_dir: Path, path: str) -> tuple[Path, dict, str] | None:
    """The newest trained copy of a version file: (file, manifest entry, config YAML), from the newest
    unfinished build that finished it, else from the served version; None if neither has it."""
    current = read_current(run_dir)
    for v in sorted((v for v in version_numbers(run_dir) if v > (current or 0)), reverse=True):
        vdir = version_dir(run_dir, v)
        progress = vdir / PROGRESS_FILE
        entry = json.loads(progress.read_text()).get(path) if progress.is_file() else None
        if entry is not None and (vdir / CONFIG_FILE).is_file():
            return vdir / path, entry, (vdir / CONFIG_FILE).read_text()
    if current is None:
        return None
    vdir = version_dir(run_dir, current)
    manifest = read_manifest(vdir)
    if path not in manifest["files"]:
        return None
    entry = {"environment": manifest["environment"], **manifest["files"][path]}  # older manifests: per version
    return vdir / path, entry, (vdir / CONFIG_FILE).read_text()


def go_live(
    run_dir: Path,
    registry: Registry,
    n: int,
    manifest: dict,
    remove: Path | None,
    before_switch: Callable[[int], None] | None,
) -> dict:
    """Write the manifest, record the version, let `before_switch` look at it, switch, clean up."""
    vdir = version_dir(run_dir, n)
    write_manifest(vdir, manifest)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    with registry.transaction():
        registry.add_version(n, manifest)
    if before_switch is not None:
        before_switch(n)
    crash_point("before-switch")
    switch_current(run_dir, n)
    crash_point("after-switch")
    (vdir / PROGRESS_FILE).unlink(missing_ok=True)
    remove_other_versions(run_dir, keep=n)
    return manifest


def tidy_after_switch(run_dir: Path, current: int) -> None:
    """What `go_live` does after its switch, for a process killed right after it: the served version's
    progress file and the older versions go (an unfinished newer build stays: it may be resumed)."""
    (version_dir(run_dir, current) / PROGRESS_FILE).unlink(missing_ok=True)
    for v in version_numbers(run_dir):
        if v < current:
            shutil.rmtree(version_dir(run_dir, v), ignore_errors=True)


def remove_other_versions(run_dir: Path, keep: int) -> None:
    for v in version_numbers(run_dir):
        if v != keep:
            shutil.rmtree(version_dir(run_dir, v), ignore_errors=True)


def link(src: Path, dst: Path) -> None:
    """Reuse a file of the previous version: a hard link where possible (same bytes, no copy)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _config_hash_of(vdir: Path) -> str | None:
    try:
        return config_hash(config_from_yaml((vdir / CONFIG_FILE).read_text()))
    except (OSError, OmegaConfBaseException):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
