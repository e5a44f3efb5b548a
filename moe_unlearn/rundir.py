"""A run directory's layout, in one place: every file name, the `current` pointer, the lock, creating
and opening the store, and the allow-list a scrub keeps.

    registry.db (-wal, -shm)        the store (storage/registry.py): sources, records, versions, requests
    current                         the served version's number: the one source of truth for what is served
    lock                            held by the one job running (`lock`)
    versions/<n>/config.yaml        the resolved config version n was trained with
    versions/<n>/manifest.json      sha256 and lineage of every file, environment, mixing settings
    versions/<n>/experts/<e>.safetensors, router/stage_<i>.safetensors
    versions/<n>/progress.json, logs/   only while version n is being built (removed when it goes live)
    audits/<request id>/            audit reports: numbers only (audit/report.py writes AUDIT_FILES)

Nothing else survives a scrub (`stray_files`).
"""

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from moe_unlearn.config import Config
from moe_unlearn.data.corpus import PUBLIC, base_corpus_domains, generate_corpus
from moe_unlearn.errors import UserError
from moe_unlearn.storage.keys import KEY_FILE
from moe_unlearn.storage.registry import Registry

DEFAULT_RUN_DIR = Path("checkpoints/default")
REGISTRY_FILE = "registry.db"
REGISTRY_FILES = (REGISTRY_FILE, f"{REGISTRY_FILE}-wal", f"{REGISTRY_FILE}-shm")
CURRENT = "current"
LOCK_FILE = "lock"
VERSIONS_DIR = "versions"
AUDITS_DIR = "audits"
AUDIT_FILES = ("audit.json", "audit.md", "losses.png", "exposure.png", "timings.png")
# inside a version directory
CONFIG_FILE = "config.yaml"
MANIFEST = "manifest.json"
PROGRESS_FILE = "progress.json"  # files finished so far by a build that has not gone live yet
LOGS_DIR = "logs"
EXPERTS_DIR = "experts"
ROUTER_DIR = "router"
BASE_FILE = "base.safetensors"  # the base model (only when the registry has base sources)


def expert_file(name: str) -> str:
    """An expert's file, relative to its version directory."""
    return f"{EXPERTS_DIR}/{name}.safetensors"


def features_file(expert: str) -> str:
    """The base features of an expert's records, read by the router stages (with a FeatureRouter)."""
    return f"{ROUTER_DIR}/features/{expert}.safetensors"


def stage_file(stage: int) -> str:
    """A router stage's file (weights and Fisher), relative to its version directory."""
    return f"{ROUTER_DIR}/stage_{stage}.safetensors"


def registry_path(run_dir: Path) -> Path:
    return Path(run_dir) / REGISTRY_FILE


def exists(run_dir: Path) -> bool:
    """Whether `run_dir` is a run directory (its store is complete)."""
    return registry_path(run_dir).is_file()


def version_dir(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / VERSIONS_DIR / str(n)


def version_numbers(run_dir: Path) -> list[int]:
    """Every version directory's number, served, old or unfinished, in order."""
    root = Path(run_dir) / VERSIONS_DIR
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def audit_dir(run_dir: Path, request_id: str) -> Path:
    return Path(run_dir) / AUDITS_DIR / request_id


def read_current(run_dir: Path) -> int | None:
    """The version being served, or None if nothing has been trained yet."""
    path = Path(run_dir) / CURRENT
    if not path.exists():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise UserError(f"{path}: corrupt pointer {text[:20]!r} (expected a version number)")
    return int(text)


def switch_current(run_dir: Path, n: int) -> None:
    """Point `current` at version n atomically: readers see the old or the new number, never a mix."""
    tmp = Path(run_dir) / f"{CURRENT}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{n}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(run_dir) / CURRENT)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(vdir: Path, manifest: dict) -> None:
    tmp = vdir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, vdir / MANIFEST)


def read_manifest(vdir: Path) -> dict:
    path = vdir / MANIFEST
    if not path.is_file():
        raise UserError(f"missing manifest {path}: the version was never completed")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"corrupt manifest {path}: not valid JSON") from None


@contextmanager
def lock(run_dir: Path, wait: bool = False, console: Console | None = None, create: bool = False) -> Iterator[None]:
    """One job at a time per run directory. Without `wait` a second one fails fast with a clear
    message; with it, it queues behind the running job. Only with `create` may the run directory be new
    (else a missing one is a UserError, and nothing is created: no directory, no lock file)."""
    run_dir = Path(run_dir)
    if not create and not exists(run_dir):
        raise UserError(f"no run directory at {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UserError(f"{run_dir} is busy: another job is running") from None
            (console or Console(stderr=True)).print(f"waiting for the job running on {run_dir} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def remove_new(run_dir: Path, there: set[Path] | None) -> None:
    """Undo the creation of a run directory: what is in it now but not in `there` (None: it did not exist,
    so remove it whole)."""
    if there is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in set(run_dir.iterdir()) - there:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def job_running(run_dir: Path) -> bool:
    """Whether a job holds the run directory's lock now (a killed job's lock is released with its process).
    Creates nothing."""
    try:
        f = open(Path(run_dir) / LOCK_FILE)  # noqa: SIM115 -- closed below; read-only: flock needs no write
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def open_registry(run_dir: Path, cfg: Config | None) -> Registry:
    """The run directory's store. A missing one is created from `cfg` (with the built-in corpus unless
    `data.builtin=false`); without `cfg` it is a UserError. With `cfg`, its built-in corpus settings must
    be those the directory was created with (the corpus is written once)."""
    run_dir = Path(run_dir)
    if not exists(run_dir):
        if cfg is None:
            raise UserError(f"no run directory at {run_dir}")
        _create(run_dir, cfg)
    registry = Registry(registry_path(run_dir))
    if cfg is not None:
        check_corpus(registry, run_dir, cfg)
    return registry


def check_corpus(registry: Registry, run_dir: Path, cfg: Config) -> None:
    """`cfg`'s built-in corpus settings must be those the run directory was created with."""
    if not cfg.data.builtin:
        return
    stored = registry.get_meta("builtin_corpus")
    wanted = json.dumps(corpus_settings(cfg), sort_keys=True)
    if stored is not None and stored != wanted:
        raise UserError(
            f"data.corpus differs from the built-in corpus {run_dir} was created with ({stored}); "
            "the corpus is written once per run directory: use a new --run-dir"
        )


def corpus_settings(cfg: Config) -> dict:
    """The built-in corpus settings a run directory records (the base keys only when used, so directories
    made before they existed still match)."""
    settings = asdict(cfg.data.corpus)
    for key in ("base_domains", "base_records"):
        if settings[key] == 0:
            settings.pop(key)
    return settings


def describe(run_dir: Path, registry: Registry) -> dict:
    """What a run directory holds: sources, experts (in stage order), record counts, versions, and the
    served version's number and manifest."""
    current = read_current(run_dir)
    return {
        "run_dir": str(run_dir),
        "experts": registry.experts(),
        "sources": [asdict(s) for s in registry.sources()],
        "records": registry.count_records(),
        "current_version": current,
        "versions": [{"version": n, "created": t} for n, t in registry.versions()],
        "manifest": read_manifest(version_dir(run_dir, current)) if current is not None else None,
    }


def _create(run_dir: Path, cfg: Config) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f"{REGISTRY_FILE}.creating"
    others = sorted(p.name for p in run_dir.iterdir() if p.name not in (LOCK_FILE, tmp.name))
    if others:  # a scrub deletes whatever is not on the allow-list: never adopt a directory with files
        raise UserError(f"{run_dir} is not empty and not a run directory (holds {others[0]!r}, ...)")
    tmp.unlink(missing_ok=True)
    registry = Registry(tmp)
    with registry.transaction():
        if cfg.data.builtin:
            c = cfg.data.corpus
            records = generate_corpus(
                c.domains, c.records_per_domain, c.seed, c.canaries, c.canary_repeats, c.base_domains, c.base_records
            )
            mapping = {s: spec.name for spec in cfg.experts for s in spec.sources}
            base = {*base_corpus_domains(c.domains, c.base_domains), PUBLIC}
            for source in dict.fromkeys(r.source for r in records):
                if source in base:
                    registry.add_source(source, None, builtin=True, role="base")
                else:
                    registry.add_source(source, mapping.get(source, source), builtin=True)
            registry.insert_records(records)
            registry.set_meta("builtin_corpus", json.dumps(corpus_settings(cfg), sort_keys=True))
    registry.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    registry.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.rename(registry_path(run_dir))  # the run directory exists only once its store is complete


def allowed_files(run_dir: Path) -> set[Path]:
    """Every file a run directory may hold: the registry and its key, the lock, the pointer, the served
    version and the audit reports."""
    run_dir = Path(run_dir)
    keep = {run_dir / name for name in (*REGISTRY_FILES, KEY_FILE, LOCK_FILE, CURRENT)}
    current = read_current(run_dir)
    if current is not None:
        vdir = version_dir(run_dir, current)
        keep |= {vdir / MANIFEST, vdir / CONFIG_FILE}
        keep |= {vdir / path for path in read_manifest(vdir)["files"]}
    keep |= {p for p in (run_dir / AUDITS_DIR).glob("*/*") if p.name in AUDIT_FILES}
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
