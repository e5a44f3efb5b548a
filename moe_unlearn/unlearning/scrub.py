"""Scrub: after the new version is live, nothing of the forgotten records may remain on disk.

The rows go (SQLite `secure_delete` overwrites them), the database is rewritten (`VACUUM`) and its
write-ahead log truncated, and every file of the run directory that is not on its allow-list is
deleted: older versions, unfinished builds, Lightning logs, temporary files.
"""

import shutil
from pathlib import Path

from moe_unlearn.audit.report import REPORT_FILES
from moe_unlearn.faults import crash_point
from moe_unlearn.storage.registry import Registry
from moe_unlearn.storage.versions import CURRENT, MANIFEST, read_current, read_manifest, version_dir

REGISTRY_FILE = "registry.db"
REGISTRY_FILES = (REGISTRY_FILE, f"{REGISTRY_FILE}-wal", f"{REGISTRY_FILE}-shm")
LOCK_FILE = "lock"
AUDITS_DIR = "audits"  # audits/<request id>/: reports of numbers only (see moe_unlearn.audit.report)


def allowed_files(run_dir: Path) -> set[Path]:
    """Every file a run directory may hold: the registry, the lock, the pointer, and the served version."""
    run_dir = Path(run_dir)
    keep = {run_dir / name for name in (*REGISTRY_FILES, LOCK_FILE, CURRENT)}
    current = read_current(run_dir)
    if current is not None:
        vdir = version_dir(run_dir, current)
        keep |= {vdir / MANIFEST, vdir / "config.yaml"}
        keep |= {vdir / path for path in read_manifest(vdir)["files"]}
    keep |= {p for p in (run_dir / AUDITS_DIR).glob("*/*") if p.name in REPORT_FILES}
    return keep


def stray_files(run_dir: Path) -> list[Path]:
    """Files and directories of the run directory that are not on its allow-list."""
    keep = allowed_files(run_dir)
    parents = {p for path in keep for p in path.parents}
    strays = []
    for path in sorted(Path(run_dir).rglob("*")):
        if path in keep or (path.is_dir() and path in parents):
            continue
        if not any(parent in strays for parent in path.parents):
            strays.append(path)
    return strays


def scrub(run_dir: Path, registry: Registry, request_ids: list[str]) -> int:
    """Delete the records of these requests for good, compact the database and remove stray files.
    Returns the number of record rows deleted."""
    with registry.transaction():
        deleted = registry.purge(request_ids)
    crash_point("mid-scrub")
    registry.compact()
    for path in stray_files(run_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return deleted
