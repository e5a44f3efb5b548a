"""The job that carries out forget and drop requests, one at a time per run directory.

    pending --(tombstone)--> running: build the new version beside the old, switch `current`,
    scrub, certify --> done

All requests pending when a job starts are merged: each affected expert is retrained once, however
many requests touch it. Every step is recorded on the request, and every step can be re-entered,
so after a crash at any point `forget --resume` (or the next job) finishes what was started with the
same result. The caller holds the run directory's lock.
"""

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console

from moe_unlearn.audit.collect import AuditSettings, audit_data, measure
from moe_unlearn.config import Config
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.errors import UserError
from moe_unlearn.faults import crash_point
from moe_unlearn.models.loading import load_version
from moe_unlearn.rundir import read_current, read_manifest, version_dir
from moe_unlearn.storage.builds import served_config
from moe_unlearn.storage.registry import Registry, now
from moe_unlearn.training.build import build_version
from moe_unlearn.training.plan import changes
from moe_unlearn.unlearning.approximate_build import build_approximate_version
from moe_unlearn.unlearning.certificate import build_certificate, certify, version_summary
from moe_unlearn.unlearning.requests import resolve_drop
from moe_unlearn.unlearning.scrub import scrub


def apply(registry: Registry, request: dict) -> None:
    """Tombstone a request's records (and retire a drop's sources and experts). Inside a transaction."""
    if request["kind"] == "drop":
        resolve_drop(registry, source=request["payload"]["source"], expert=request["payload"]["expert"])
        for source in request["payload"]["sources"]:
            registry.retire(request["id"], "source", source)
        for expert in request["payload"]["experts"]:
            registry.retire(request["id"], "expert", expert)
    registry.tombstone(request["id"], [record_id for record_id, _, _ in registry.request_records(request["id"])])


def would_retrain(run_dir: Path, registry: Registry, request: dict) -> dict:
    """What carrying out `request` would retrain. Call inside `registry.preview()`: it tombstones.
    Raises UserError if the result would not be a trainable model."""
    cfg = served_config(run_dir)
    apply(registry, request)
    jobs = changes(run_dir, registry, cfg) if cfg is not None else []
    base = any(j.kind == "base" for j in jobs)
    return {
        "base": base,
        "full_rebuild": base,  # every expert branches from the base: all of them retrain with it
        "experts": [j.expert for j in jobs if j.kind == "expert"],
        "router_stages": [j.stage for j in jobs if j.kind == "router-stage"],
    }


def run_queue(run_dir: Path, registry: Registry, console: Console) -> list[str]:
    """Carry out every unfinished request, job by job; returns the ids finished."""
    finished = []
    while ids := _run_job(run_dir, registry, console):
        finished += ids
    return finished


def method_of(request: dict) -> str:
    return request["payload"].get("method", "exact")


def _run_job(run_dir: Path, registry: Registry, console: Console) -> list[str]:
    """One job: the requests already running (after a crash) or else the pending ones, merged when
    exact; an approximate request (for contrast only) always runs on its own."""
    method = _start(registry, read_current(run_dir))
    job = registry.requests(["running"])
    if not job:
        return []
    crash_point("after-tombstone")
    ids = [r["id"] for r in job]
    console.print(f"job: {len(ids)} request(s) {', '.join(ids)}" + ("" if method == "exact" else f" ({method})"))

    cfg = served_config(run_dir)
    audited = [r["id"] for r in job if r["payload"].get("audit")]
    measured: dict = {}

    def audit(after: int) -> None:
        crash_point("mid-measure")
        measured.update(
            audit_numbers(run_dir, registry, cfg, audited, job[0]["result"]["version_before"], after, console)
        )

    before_switch = audit if audited and cfg else None
    manifest = None
    if cfg is not None and method == "exact":
        # No held-out evaluation: a deletion should cost what its retraining costs (`evaluate` reports).
        manifest = build_version(
            run_dir,
            registry,
            cfg,
            console=console,
            keep_logs=False,
            evaluate_heldout=False,
            before_switch=before_switch,
        )
    elif cfg is not None:
        forgotten = registry.forgotten_records(ids)
        manifest = build_approximate_version(run_dir, registry, cfg, method, forgotten, console, before_switch)
    if before_switch is not None and not measured:  # nothing was retrained: the served version is both
        audit(read_current(run_dir))
    _set_step(registry, ids, "switched")
    deleted = scrub(run_dir, registry, ids)
    _set_step(registry, ids, "scrubbed")
    console.print(f"scrubbed {deleted:,} record rows; the run directory holds only the served version")

    crash_point("before-certify")
    _certify(run_dir, registry, cfg, job, manifest, method, audited, measured)
    return ids


def _start(registry: Registry, current: int | None) -> str:
    """Tombstone the requests that join this job and mark them running; returns the job's method."""
    with registry.transaction():
        running = registry.requests(["running"])
        pending = registry.requests(["pending"])
        method = method_of(running[0]) if running else method_of(pending[0]) if pending else "exact"
        joining = [r for r in pending if method_of(r) == "exact"] if method == "exact" else pending[:1]
        for request in joining if not running or method == "exact" else []:
            try:
                apply(registry, request)
            except UserError as e:  # e.g. a drop of what an earlier request in this batch already dropped
                registry.update_request(request["id"], status="failed", error=str(e), finished_at=now())
                continue
            registry.update_request(
                request["id"],
                status="running",
                step="tombstoned",
                started_at=now(),
                result={"version_before": current},
            )
    return method


def _certify(
    run_dir: Path,
    registry: Registry,
    cfg: Config | None,
    job: list[dict],
    manifest: dict | None,
    method: str,
    audited: list[str],
    measured: dict,
) -> None:
    """Append each request's certificate to the chain and mark it done."""
    ids = [r["id"] for r in job]
    after_n = read_current(run_dir)
    after = version_summary(read_manifest(version_dir(run_dir, after_n))) if after_n is not None else None
    with registry.transaction():
        for request in job:
            before_n = request["result"]["version_before"]
            trained = manifest["trained"] if manifest is not None and after_n != before_n else []
            rows = [
                {
                    "id_hash": registry.id_hash(record_id),
                    "source": source,
                    "keyed_hash": digest,
                    "held_out": bool(cfg) and is_heldout(record_id, cfg.seed, cfg.data.heldout_fraction),
                }
                for record_id, source, digest in registry.request_records(request["id"])
            ]
            started = datetime.fromisoformat(request["started_at"])
            body = build_certificate(
                request,
                rows,
                merged_with=[i for i in ids if i != request["id"]],
                before=version_summary(registry.manifest(before_n)) if before_n is not None else None,
                after=after,
                trained=trained,
                wall_seconds=time.time() - started.timestamp(),
                method=method,
            )
            chain_hash = certify(registry, request["id"], body)
            registry.redact_request_records(request["id"])
            extra = {"audit": measured} if request["id"] in audited else {}
            registry.update_request(
                request["id"],
                status="done",
                step="certified",
                finished_at=now(),
                result={**request["result"], "version_after": after_n, "certificate_hash": chain_hash, **extra},
            )


def audit_numbers(
    run_dir: Path,
    registry: Registry,
    cfg: Config,
    request_ids: list[str],
    before: int | None,
    after: int,
    console: Console | None = None,
) -> dict:
    """The audit's measurements of versions `before` and `after` (numbers only), while the forgotten
    text still exists: see moe_unlearn.audit.collect."""
    forgotten = registry.forgotten_records(request_ids)
    live = registry.records([s.name for s in registry.sources()])
    data = audit_data(cfg, forgotten, live, AuditSettings())
    old, _ = load_version(run_dir, before if before is not None else after)
    new, manifest = load_version(run_dir, after)
    numbers = measure(old, new, data, AuditSettings(), console)
    numbers["counts"]["forget"] = len(forgotten)
    numbers["versions"] = {"before": before, "after": after}
    numbers["method"] = manifest.get("method", "exact")
    return numbers


def _set_step(registry: Registry, ids: list[str], step: str) -> None:
    with registry.transaction():
        for request_id in ids:
            registry.update_request(request_id, step=step)
