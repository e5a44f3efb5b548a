"""Scrub: after the new version is live, nothing of the forgotten records may remain on disk.

The rows go (SQLite `secure_delete` overwrites them), the database is rewritten (`VACUUM`) and its
write-ahead log truncated, and every file of the run directory that is not on its allow-list
(`moe_unlearn.rundir.stray_files`) is deleted: older versions, unfinished builds, Lightning logs,
temporary files.
"""

import shutil
from pathlib import Path

from moe_unlearn.faults import crash_point
from moe_unlearn.rundir import stray_files
from moe_unlearn.storage.registry import Registry


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
