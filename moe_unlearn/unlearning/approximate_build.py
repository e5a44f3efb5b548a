"""A version built by an approximate method (gradient ascent, nabla-tau), for contrast with the exact
forget: each expert that trained on the forgotten records gets the method applied to its current
weights; every other file, router stages included, is kept. The manifest says which method, and the
changed experts' lineage matches nothing, so the next exact build retrains them (and the stale router
stages) from scratch.
"""

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from moe_unlearn.config import Config
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import ids_digest, is_heldout, split
from moe_unlearn.rundir import CONFIG_FILE, EXPERTS_DIR, LOGS_DIR, ROUTER_DIR, expert_file, version_dir
from moe_unlearn.storage.builds import go_live, link, next_version, served_files
from moe_unlearn.storage.registry import Registry, now
from moe_unlearn.storage.versions import environment, load_tensors, save_tensors
from moe_unlearn.training.plan import lineage


def build_approximate_version(
    run_dir: Path,
    registry: Registry,
    cfg: Config,
    method: str,
    forgotten: list[Record],
    console: Console,
    before_switch: Callable[[int], None] | None = None,
) -> dict:
    """Apply `method` to the experts that trained on `forgotten`, keep every other file, go live.
    Returns the new manifest (the served one, unchanged, if no expert trained on those records)."""
    # Lightning (seconds to import) only when something is unlearned.
    from moe_unlearn.training.trainer import configure_torch
    from moe_unlearn.unlearning.approximate import unlearn_expert

    configure_torch(cfg)
    current, old = served_files(run_dir)
    old_dir = version_dir(run_dir, current)
    source_map = registry.source_map()
    trained_on = [r for r in forgotten if not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)]
    affected = [e for e in old["experts"] if any(source_map.get(r.source) == e for r in trained_on)]
    if not affected:
        console.print("the forgotten records were never trained on: nothing to unlearn")
        return old
    n = next_version(run_dir)
    vdir = version_dir(run_dir, n)
    shutil.rmtree(vdir, ignore_errors=True)
    (vdir / EXPERTS_DIR).mkdir(parents=True)
    (vdir / ROUTER_DIR).mkdir()
    shutil.copy2(old_dir / CONFIG_FILE, vdir / CONFIG_FILE)
    files = {}
    for path, entry in old["files"].items():
        expert = next((e for e in affected if path == expert_file(e)), None)
        if expert is None:
            link(old_dir / path, vdir / path)
            files[path] = entry
            continue
        started = time.perf_counter()
        console.print(f"{method}: unlearning in expert [cyan]{expert}[/] (approximate)")
        sources = registry.sources_of(expert)
        retain, heldout = split(registry.records(sources), cfg.seed, cfg.data.heldout_fraction)
        forget = [r for r in trained_on if r.source in sources]
        weights = load_tensors(old_dir / path, entry["sha256"])
        tensors = unlearn_expert(cfg, expert, weights, method, forget, retain, heldout, vdir / LOGS_DIR)
        files[path] = {
            **entry,
            "sha256": save_tensors(vdir / path, tensors),
            "lineage": lineage(
                kind="approximate", method=method, base=entry["lineage"], forget=ids_digest(r.id for r in forget)
            ),
            "method": method,
            "trained_in_version": n,
            "train_seconds": round(time.perf_counter() - started, 2),
        }
    manifest = {
        **old,
        "version": n,
        "parent": current,
        "created": now(),
        "config_file_sha256": hashlib.sha256((vdir / CONFIG_FILE).read_bytes()).hexdigest(),
        "environment": environment(),
        "files": files,
        "trained": [expert_file(e) for e in affected],
        "eval": None,
        "method": method,
    }
    return go_live(run_dir, registry, n, manifest, vdir / LOGS_DIR, before_switch)
