"""Commands that remove training data and check the result: forget, drop, verify, audit."""

from pathlib import Path
from typing import Annotated

import typer

from moe_unlearn.cli.common import AsJson, Deadline, DryRun, NoWait, RunDir, emit, err, user_errors
from moe_unlearn.cli.render import render_audit, render_request_result, render_verify
from moe_unlearn.errors import UserError
from moe_unlearn.run import Run
from moe_unlearn.rundir import DEFAULT_RUN_DIR


@user_errors
def forget(
    records: Annotated[list[str] | None, typer.Option("--record", help="Record id to forget (repeatable).")] = None,
    match: Annotated[str | None, typer.Option("--match", help="Forget every record containing TEXT.")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="File of record ids, one per line.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source (default: all).")] = None,
    dry_run: DryRun = False,
    deadline: Deadline = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Finish the pending request with this id.")] = None,
    no_wait: NoWait = False,
    audit: Annotated[
        bool, typer.Option("--audit", help="Measure before/after while the text exists (see `audit`).")
    ] = False,
    method: Annotated[
        str,
        typer.Option("--method", help="exact (default); gradient-ascent or nabla-tau: approximate, for contrast."),
    ] = "exact",
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Forget records exactly: retrain only the experts that saw them, then print the certificate."""
    run = Run(run_dir, console=err)
    if resume is not None:
        if records or match or ids_file:
            raise UserError("--resume takes no --record, --match or --ids-file")
        result = run.resume(resume)
    else:
        result = run.forget(
            records=records or (),
            match=match,
            ids_file=ids_file,
            source=source,
            dry_run=dry_run,
            deadline=deadline,
            wait=not no_wait,
            audit=audit,
            method=method,
        )
    report = run.audit(result["request_id"]) if audit and "statement" in result else None
    if report is not None and as_json:
        result = {**result, "audit_files": report["files"]}
    emit(result, as_json, render_request_result)
    if report is not None and not as_json:
        render_audit(report)


@user_errors
def drop(
    source: Annotated[str | None, typer.Option("--source", help="Source to drop.")] = None,
    expert: Annotated[str | None, typer.Option("--expert", help="Expert to drop, with all its sources.")] = None,
    dry_run: DryRun = False,
    deadline: Deadline = None,
    no_wait: NoWait = False,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Drop a source or an expert; no other expert is retrained."""
    result = Run(run_dir, console=err).drop(
        source=source, expert=expert, dry_run=dry_run, deadline=deadline, wait=not no_wait
    )
    emit(result, as_json, render_request_result)


@user_errors
def verify(
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Keep the oracle here (default: temp).")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Train the oracle from scratch on the retained records and compare it tensor for tensor.
    Exit code 0: equal; 1: different; 3: cannot judge bit-identity (built on another torch or CPU: the
    training-data lineage in the manifests is compared instead and printed)."""
    result = Run(run_dir, console=err).verify(work_dir)
    emit(result, as_json, render_verify)
    if not result["comparable"]:  # whatever the tensors say, the verdict is the lineage's
        raise typer.Exit(3)
    if not result["equal"]:
        raise typer.Exit(1)


@user_errors
def audit(
    request: Annotated[str, typer.Option("--request", help="Id of a request forgotten with --audit.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write (default: RUN_DIR/audits/ID).")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    as_json: AsJson = False,
):
    """Report on a forget: membership inference, canary exposure and extraction, router agreement,
    timings (audit.json, audit.md and plots), from the numbers measured at forget time."""
    emit(Run(run_dir, console=err).audit(request, out_dir), as_json, render_audit)
