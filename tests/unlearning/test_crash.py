"""Crash safety: SIGKILL at every named step of a forget leaves a served, loadable version (the old
or the new one, never a mix), and resuming gives the same model as an uninterrupted run."""

import json
import os
import shutil
import signal

import pytest

from moe_unlearn import Run
from moe_unlearn.faults import ENV, STEPS
from moe_unlearn.rundir import stray_files
from tests.conftest import cli


def forget_cli(run_dir, *args, crash_at=None):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at:
        env[ENV] = crash_at
    return cli("forget", *args, "--run-dir", run_dir, "--json", env=env)


def served_files(run_dir) -> dict[str, str]:
    manifest = Run(run_dir).load()[1]  # loads and checks every file against the manifest
    return {path: entry["sha256"] for path, entry in manifest["files"].items()}


@pytest.fixture(scope="module")
def reference(tiny_run_dir, tmp_path_factory):
    """The records to forget and the files an uninterrupted forget produces."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    shutil.copytree(tiny_run_dir, run_dir)
    ids = [r.id for r in Run(run_dir).registry.records(["weather"])[:4]]
    done = forget_cli(run_dir, *(x for i in ids for x in ("--record", i)))
    assert done.returncode == 0, done.stderr
    return ids, served_files(tiny_run_dir), served_files(run_dir)


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_any_step_then_resume_gives_the_uninterrupted_result(step, reference, tiny_copy):
    ids, old_files, new_files = reference
    args = [x for i in ids for x in ("--record", i)]
    crashed = forget_cli(tiny_copy, *args, crash_at=step)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    served = served_files(tiny_copy)
    assert served in (old_files, new_files)  # the old version or the new one, never a mix

    (request,) = Run(tiny_copy).requests()
    resumed = forget_cli(tiny_copy, "--resume", request["id"])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["request_id"] == request["id"]
    assert served_files(tiny_copy) == new_files
    assert stray_files(tiny_copy) == []
    assert Run(tiny_copy).registry.record_rows(ids) == {}


def test_running_the_same_command_again_finishes_the_interrupted_request(reference, tiny_copy):
    ids, _, new_files = reference
    args = [x for i in ids for x in ("--record", i)]
    assert forget_cli(tiny_copy, *args, crash_at="mid-expert-training").returncode == -signal.SIGKILL
    again = forget_cli(tiny_copy, *args)
    assert again.returncode == 0, again.stderr
    assert served_files(tiny_copy) == new_files
    assert [r["status"] for r in Run(tiny_copy).requests()] == ["done"]


def test_registry_flags_a_request_whose_job_was_killed(reference, tiny_copy):
    """A killed job leaves its request "running" in the store; `registry` says it is interrupted (the lock
    is free: nobody is running it) and how to finish it. While a job holds the lock it is not flagged."""
    import fcntl

    from moe_unlearn.rundir import LOCK_FILE

    ids, _, _ = reference
    assert forget_cli(tiny_copy, "--record", ids[0], crash_at="after-switch").returncode == -signal.SIGKILL
    (request,) = Run(tiny_copy).requests()
    assert request["status"] == "running" and request["interrupted"] is True
    listed = cli("registry", "--run-dir", tiny_copy, "--json")
    assert json.loads(listed.stdout)["requests"][0]["interrupted"] is True
    shown = cli("registry", "--run-dir", tiny_copy)
    assert f"moe-unlearn forget --resume {request['id']}" in shown.stdout and "interrupted" in shown.stdout
    with open(tiny_copy / LOCK_FILE, "w") as held:  # a job at work
        fcntl.flock(held, fcntl.LOCK_EX)
        assert Run(tiny_copy).requests()[0]["interrupted"] is False
    assert forget_cli(tiny_copy, "--resume", request["id"]).returncode == 0
    assert "interrupted" not in Run(tiny_copy).requests()[0]
