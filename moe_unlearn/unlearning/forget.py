"""Forget and drop requests from the caller's side: resolve, queue, carry out (job.py), answer.

    forget / drop -> resolve (requests.py) -> dry run, or store the request -> run the queue -> certificate

A request that a crash left half-done is finished before a new one is resolved, so a new request
never overtakes it. The caller does not hold the run directory's lock: these functions take it.
"""

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from moe_unlearn.errors import UserError, utf8
from moe_unlearn.faults import crash_point
from moe_unlearn.rundir import lock, read_current
from moe_unlearn.storage.registry import Registry
from moe_unlearn.unlearning.job import run_queue, would_retrain
from moe_unlearn.unlearning.requests import (
    deadline_state,
    drop_rows,
    new_request_id,
    parse_deadline,
    resolve_drop,
    resolve_forget,
)

METHODS = ("exact", "gradient-ascent", "nabla-tau")


def forget(
    run_dir: Path,
    registry: Registry,
    console: Console,
    *,
    records: Sequence[str] = (),
    match: str | None = None,
    ids_file: str | Path | None = None,
    source: str | None = None,
    dry_run: bool = False,
    deadline: str | None = None,
    wait: bool = True,
    audit: bool = False,
    method: str = "exact",
) -> dict:
    """A forget request (see `moe_unlearn.Run.forget`)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for record_id in records:  # a command-line argument that was not UTF-8: one line, before any lookup
        utf8(record_id, "a record id")
    if match is not None:
        utf8(match, "--match")
    if audit and read_current(run_dir) is None:
        raise UserError(
            f"nothing to audit: no trained model in {run_dir} (forget without --audit: training then never "
            "sees the records)"
        )
    deadline = parse_deadline(deadline)
    finished = finish_unfinished(run_dir, registry, console)
    if records and not match and not ids_file:
        done = registry.forgotten_by(records)
        if len(done) == len(set(records)) and len(set(done.values())) == 1:  # the same command again
            return result(run_dir, registry, console, next(iter(done.values())), wait=True)
    try:
        rows, payload = resolve_forget(
            registry, record_ids=records, match=match, ids_file=Path(ids_file) if ids_file else None, source=source
        )
    except UserError as e:
        if finished and match is not None:
            raise UserError(f"{e} (interrupted requests {', '.join(finished)} were just completed)") from None
        raise
    base = sorted({source for _, source, _ in rows} & set(registry.base_sources()))
    if method != "exact" and base:
        raise UserError(
            f"--method {method} works on experts; records of base source {base[0]!r} trained the base model "
            "that every expert branches from: forget them exactly (a full rebuild)"
        )
    payload = {**payload, "audit": audit, "method": method}
    return submit(run_dir, registry, console, "forget", payload, rows, deadline, dry_run, wait)


def drop(
    run_dir: Path,
    registry: Registry,
    console: Console,
    *,
    source: str | None = None,
    expert: str | None = None,
    dry_run: bool = False,
    deadline: str | None = None,
    wait: bool = True,
) -> dict:
    """A drop request (see `moe_unlearn.Run.drop`)."""
    deadline = parse_deadline(deadline)
    finish_unfinished(run_dir, registry, console)
    payload = resolve_drop(registry, source=source, expert=expert)
    rows = drop_rows(registry, payload)
    return submit(run_dir, registry, console, "drop", {**payload, "records": len(rows)}, rows, deadline, dry_run, wait)


def finish_unfinished(run_dir: Path, registry: Registry, console: Console) -> list[str]:
    """Complete requests a crash left half-done; returns their ids."""
    if not registry.requests(["running"]):
        return []
    with lock(run_dir, wait=True, console=console):
        return run_queue(run_dir, registry, console)


def submit(
    run_dir: Path,
    registry: Registry,
    console: Console,
    kind: str,
    payload: dict,
    rows: list[tuple[str, str, str]],
    deadline: str | None,
    dry_run: bool,
    wait: bool,
) -> dict:
    """Store a resolved request (or, with `dry_run`, say what it would remove and retrain) and, with
    `wait`, carry it out."""
    request_id = new_request_id(kind)
    with registry.preview():  # the request as the job would see it, rolled back
        registry.add_request(request_id, kind, payload, deadline)
        registry.add_request_records(request_id, rows)
        retrain = would_retrain(run_dir, registry, registry.request(request_id))
    if dry_run:
        return {
            "dry_run": True,
            "kind": kind,
            "scope": payload,
            "records": [{"id": i, "source": s} for i, s, _ in rows],
            "record_count": len(rows),
            "would_retrain": retrain,
        }
    with registry.transaction():
        registry.add_request(request_id, kind, payload, deadline)
        registry.add_request_records(request_id, rows)
    crash_point("after-resolve")
    console.print(
        f"request {request_id}: {len(rows):,} records; retrains experts {retrain['experts'] or 'none'}, "
        f"router stages {retrain['router_stages'] or 'none'}"
    )
    return result(run_dir, registry, console, request_id, wait)


def result(run_dir: Path, registry: Registry, console: Console, request_id: str, wait: bool) -> dict:
    """The certificate of a request, carrying it out first (with `wait`) if it is still to do; else its
    status. A failed request is a UserError."""
    request = registry.request(request_id)
    if request is None:
        raise UserError(f"unknown request {request_id!r}")
    if request["status"] in ("pending", "running") and wait:
        with lock(run_dir, wait=True, console=console):
            run_queue(run_dir, registry, console)
        request = registry.request(request_id)
    if request["status"] == "failed":
        raise UserError(f"request {request_id} failed: {request['error']}")
    if request["status"] != "done":
        return {"request_id": request_id, "status": request["status"], "step": request["step"]}
    return certificate(registry, request_id)


def certificate(registry: Registry, request_id: str) -> dict:
    """The certificate of a finished request, with its place in the hash chain."""
    found = registry.certificate(request_id)
    if found is not None:
        return found
    request = registry.request(request_id)
    if request is None:
        raise UserError(f"unknown request {request_id!r}")
    raise UserError(f"request {request_id} has no certificate yet (status {request['status']})")


def request_summary(r: dict) -> dict:
    """One request as `registry` and `Run.requests` list it."""
    outcome = r["result"] or {}
    return {
        "id": r["id"],
        "kind": r["kind"],
        "status": r["status"],
        "step": r["step"],
        "created_at": r["created_at"],
        "deadline": r["deadline"],
        "deadline_status": deadline_state(r["deadline"], r["status"], r["finished_at"]),
        "finished_at": r["finished_at"],
        "records": r["payload"].get("records", len(r["payload"].get("sources", []))),
        "version_before": outcome.get("version_before"),
        "version_after": outcome.get("version_after"),
        "certificate_hash": outcome.get("certificate_hash"),
        "error": r["error"],
    }
