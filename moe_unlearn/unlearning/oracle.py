"""The oracle: the model that training from scratch on the retained records gives, in a fresh
directory and a fresh process, with the served version's config and the registry's expert order.

`verify_against_oracle` trains it and compares every tensor of every file (sha256) with the served
version: after any forget, drop, add or update they are equal on the same machine and threads.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from moe_unlearn.config import config_from_yaml, load_config
from moe_unlearn.rundir import CONFIG_FILE, lock, open_registry, read_current, read_manifest, version_dir
from moe_unlearn.storage.registry import Registry
from moe_unlearn.storage.sources import ingest_files
from moe_unlearn.storage.versions import environment, load_tensors, tensor_hashes
from moe_unlearn.training.build import build_version
from moe_unlearn.training.distributed import check_followers
from moe_unlearn.training.plan import check_expert_map

# The registry's source -> expert map is passed by `ingest --expert`, so the config's own map is cleared.
ORACLE_OVERRIDES = ["data.builtin=false", "trainer.progress_bar=false", "experts=[]"]
# What the fresh process runs (not `python -m` this module: importing the package imports it first, and
# runpy warns about that).
ORACLE_PROCESS = (
    "import sys; from pathlib import Path; from moe_unlearn.unlearning.oracle import train_oracle; "
    "train_oracle(Path(sys.argv[1]))"
)


def export_retained(run_dir: Path, registry: Registry, work_dir: Path) -> None:
    """Write what the oracle trains on: the served config, and every live record per source as JSONL,
    sources listed in the registry's expert order as [source, expert, role]."""
    current = read_current(run_dir)
    shutil.copy(version_dir(run_dir, current) / CONFIG_FILE, work_dir / CONFIG_FILE)
    (work_dir / "records").mkdir()
    order = []
    for source in registry.sources():  # ordered by expert position
        records = registry.records([source.name])
        if not records:
            continue
        with open(work_dir / "records" / f"{source.name}.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps({"id": r.id, "text": r.text}) + "\n")
        order.append([source.name, source.expert, source.role])
    (work_dir / "sources.json").write_text(json.dumps(order))


def train_oracle(work_dir: Path) -> dict:
    """In this process: a fresh run directory under work_dir, the exported records, one build (what
    `moe-unlearn init`, `ingest` and `train` do there)."""
    cfg = load_config(work_dir / CONFIG_FILE, ORACLE_OVERRIDES)
    run_dir, console = work_dir / "run", Console(stderr=True)
    with lock(run_dir, create=True):
        registry = open_registry(run_dir, cfg)
        # Entries written before sources had a role are [source, expert].
        for source, expert, *role in json.loads((work_dir / "sources.json").read_text()):
            files = [work_dir / "records" / f"{source}.jsonl"]
            ingest_files(registry, source, files, expert=expert, role=(role or ["expert"])[0], console=console)
        check_expert_map(registry, cfg)
        return build_version(run_dir, registry, cfg, only=cfg.train.experts, console=console)


def compare(run_dir: Path, oracle_run_dir: Path) -> dict:
    """Tensor-for-tensor comparison of two run directories' served versions."""
    mine = read_manifest(version_dir(run_dir, read_current(run_dir)))
    theirs_dir = version_dir(oracle_run_dir, read_current(oracle_run_dir))
    theirs = read_manifest(theirs_dir)
    mine_dir = version_dir(run_dir, mine["version"])
    files = {}
    for path in sorted(set(mine["files"]) | set(theirs["files"])):
        if path not in theirs["files"]:
            files[path] = "only in the served version"
        elif path not in mine["files"]:
            files[path] = "only in the oracle"
        else:
            a = tensor_hashes(load_tensors(mine_dir / path, mine["files"][path]["sha256"]))
            b = tensor_hashes(load_tensors(theirs_dir / path, theirs["files"][path]["sha256"]))
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            files[path] = "equal" if not differ else f"differs in {len(differ)} tensors ({differ[0]}, ...)"
    # Lineage: the hash of config, name, position and the ids of the records each file was trained on.
    lineage = {
        path: mine["files"].get(path, {}).get("lineage") == theirs["files"].get(path, {}).get("lineage")
        for path in files
    }
    return {
        "equal": all(v == "equal" for v in files.values()) and mine["experts"] == theirs["experts"],
        "lineage_equal": all(lineage.values()) and mine["experts"] == theirs["experts"],
        "lineage_differs": sorted(path for path, same in lineage.items() if not same),
        "experts": mine["experts"],
        "oracle_experts": theirs["experts"],
        "files": files,
        "version": mine["version"],
        "config_sha256": mine["config_sha256"],
        "oracle_config_sha256": theirs["config_sha256"],
    }


def verify_against_oracle(run_dir: Path, registry: Registry, work_dir: Path | None, console: Console) -> dict:
    """Train the oracle in a subprocess and compare. `comparable` is False when the served version was
    built on another torch or CPU (threads come from the config): bit-identity is not expected then, and
    `lineage_equal` (same config, expert order and training records for every file) is the evidence."""
    served_dir = version_dir(run_dir, read_current(run_dir))
    served = read_manifest(served_dir)
    # A multi-process oracle would need its other processes started with it (only train.py does that).
    check_followers(config_from_yaml((served_dir / CONFIG_FILE).read_text()))
    here = environment()
    keys = ("torch", "cpu_capability", "cpu_flags_sha256", "machine", "cuda")  # threads come from the config
    # Files imported from another machine (`expert import`) carry the environment they were trained in.
    built_in = [served["environment"], *(f["environment"] for f in served["files"].values() if "environment" in f)]
    mismatch = sorted({k for env in built_in for k in keys if env.get(k) != here.get(k)})
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="moe-unlearn-oracle-")) if own else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        export_retained(run_dir, registry, work)
        console.print(f"training the oracle from scratch in {work} (fresh process) ...")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", ORACLE_PROCESS, str(work)], check=True)
        seconds = time.perf_counter() - started
        result = compare(run_dir, work / "run")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {**result, "comparable": not mismatch, "environment_differs": mismatch, "oracle_seconds": round(seconds, 1)}
