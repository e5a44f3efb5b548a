"""The audit report of one forget request: the numbers measured at forget time (job.py stores them on
the request), privleak, timings from the certificate and the manifest, and the oracle check that
`verify` recorded for the version, written as files by moe_unlearn.audit.report."""

import json
from pathlib import Path

from moe_unlearn.audit.collect import add_privleak
from moe_unlearn.audit.report import write_report
from moe_unlearn.errors import UserError
from moe_unlearn.rundir import audit_dir, read_current
from moe_unlearn.storage.registry import Registry


def audited_numbers(registry: Registry, request_id: str) -> dict:
    """A request's stored audit numbers; a UserError for an unknown, unfinished or unaudited request."""
    request = registry.request(request_id)
    if request is None:
        raise UserError(f"unknown request {request_id!r}")
    numbers = (request["result"] or {}).get("audit")
    if numbers == {}:  # asked for, but there was no model before or after (forgotten before any training)
        raise UserError(f"request {request_id} was forgotten before any model was trained: nothing was measured")
    if numbers is None:
        if request["status"] != "done":
            raise UserError(f"request {request_id} is {request['status']}: audit it once it is done")
        raise UserError(f"request {request_id} was not audited: forget with --audit to measure it")
    return numbers


def audit_request(run_dir: Path, registry: Registry, request_id: str, out_dir: Path | None = None) -> dict:
    """The whole report (see `moe_unlearn.Run.audit`), written to `out_dir` (default audits/<id>/)."""
    numbers = audited_numbers(registry, request_id)
    after = numbers["versions"]["after"]
    exact = numbers["method"] == "exact"
    verified = registry.get_meta(f"verify:{after}")
    verify = json.loads(verified) if verified else None
    oracle = "after-model: bit-identical to retraining from scratch by construction" if exact else None
    if verify is not None and verify["equal"]:
        oracle = "after-model: `verify` found it bit-identical to a model trained from scratch"
    manifest = registry.manifest(after)
    certificate = registry.certificate(request_id)
    if certificate is None:
        raise UserError(f"request {request_id} has no certificate yet")
    trained = [e.get("train_seconds", 0.0) for p, e in manifest["files"].items() if p in manifest["trained"]]
    report = {
        **numbers,
        "request": request_id,
        "exact": exact,
        "membership": add_privleak(numbers, oracle),
        "timings": {
            "forget_seconds": round(certificate["wall_seconds"] - numbers["audit_seconds"], 1),
            "audit_seconds": numbers["audit_seconds"],
            "trained_seconds": round(sum(trained), 1),
            "full_retrain_seconds": round(sum(e.get("train_seconds", 0.0) for e in manifest["files"].values()), 1),
            "oracle_seconds": verify["oracle_seconds"] if verify else None,
        },
        "checks": {
            "current_version": read_current(run_dir),
            "verify": None if verify is None else {k: verify[k] for k in ("equal", "comparable", "oracle_seconds")},
        },
    }
    files = write_report(Path(out_dir) if out_dir else audit_dir(run_dir, request_id), report)
    return {**report, "files": [str(p) for p in files]}
