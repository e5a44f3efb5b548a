"""The crash matrix beyond forget (test_crash.py): a drop, an add and an update are each SIGKILLed at every
step they pass; then the served version loads, `registry` works, and `update` (which finishes interrupted
requests and unfinished builds) leaves exactly the files an uninterrupted run leaves. Also a forget of
records of two experts killed in its second expert's training, a forget with --audit killed while it
measures, and a full disk during a build: one line, the old version still served, the request resumable."""

import errno
import json
import os
import shutil
import signal

import pytest

from moe_unlearn import Run
from moe_unlearn.faults import ENV
from moe_unlearn.rundir import stray_files
from tests.conftest import cli
from tests.unlearning.test_crash import served_files

TRAINING = ["mid-expert-training", "mid-router-stage", "before-switch", "after-switch"]
REQUEST = ["after-resolve", "after-tombstone", "mid-router-stage", "before-switch", "after-switch", "mid-scrub"]
MATRIX = {
    "drop": REQUEST + ["before-certify"],  # a drop retrains router stages only
    "add": TRAINING,
    "update": TRAINING,
}


def prepare(operation: str, run_dir, tmp_path) -> list:
    """The command line of `operation` on run_dir (and what it needs written first)."""
    if operation == "drop":
        return ["drop", "--source", "weather"]
    mail = tmp_path / "mail.jsonl"
    mail.write_text("".join(json.dumps({"id": f"mail-{i}", "text": f"Lunch at {i} pm? Ana"}) + "\n" for i in range(40)))
    if operation == "add":
        return ["add", mail, "--source", "mail"]
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"id": f"w-new-{i}", "text": f"Forecast {i}: rain"}) + "\n" for i in range(20)))
    Run(run_dir).ingest("weather", [more])
    return ["update"]


def run_cli(args, run_dir, crash_at=None):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at:
        env[ENV] = crash_at
    return cli(*args, "--run-dir", run_dir, "--json", env=env)


@pytest.fixture(scope="module")
def uninterrupted(tiny_run_dir, tmp_path_factory):
    """operation -> the served files after it ran without a crash."""
    out = {}
    for operation in MATRIX:
        tmp = tmp_path_factory.mktemp(operation)
        run_dir = tmp / "run"
        shutil.copytree(tiny_run_dir, run_dir)
        done = run_cli(prepare(operation, run_dir, tmp), run_dir)
        assert done.returncode == 0, done.stderr
        out[operation] = served_files(run_dir)
    return out


@pytest.mark.parametrize("operation, step", [(o, s) for o, steps in MATRIX.items() for s in steps])
def test_sigkill_at_every_step_of_drop_add_update_then_update_finishes_it(
    operation, step, uninterrupted, tiny_run_dir, tiny_copy, tmp_path
):
    old_files = served_files(tiny_run_dir)
    crashed = run_cli(prepare(operation, tiny_copy, tmp_path), tiny_copy, crash_at=step)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert served_files(tiny_copy) in (old_files, uninterrupted[operation])  # loads: old or new, never a mix
    assert run_cli(["registry"], tiny_copy).returncode == 0
    finished = run_cli(["update"], tiny_copy)
    assert finished.returncode == 0, finished.stderr
    assert served_files(tiny_copy) == uninterrupted[operation]
    assert {p.name for p in stray_files(tiny_copy)} <= {"logs"}  # training's logs, kept until a forget's scrub
    assert all(r["status"] == "done" for r in Run(tiny_copy).requests())


def test_a_forget_killed_in_its_second_experts_training_resumes_to_the_same_files(tiny_run_dir, tmp_path):
    ids = [Run(tiny_run_dir).registry.records([s])[3].id for s in ("recipes", "code")]
    args = ["forget", *(x for i in ids for x in ("--record", i))]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for run_dir in (reference, crashed):
        shutil.copytree(tiny_run_dir, run_dir)
    assert run_cli(args, reference).returncode == 0
    assert run_cli(args, crashed, crash_at="mid-expert-training:2").returncode == -signal.SIGKILL
    (request,) = Run(crashed).requests()
    assert request["interrupted"] and request["step"] == "tombstoned"
    assert run_cli(["forget", "--resume", request["id"]], crashed).returncode == 0
    assert served_files(crashed) == served_files(reference)


def test_a_forget_with_audit_killed_while_it_measures_resumes_and_measures(tiny_copy):
    record = Run(tiny_copy).registry.records(["weather"])[5].id
    crashed = run_cli(["forget", "--record", record, "--audit"], tiny_copy, crash_at="mid-measure")
    assert crashed.returncode == -signal.SIGKILL
    (request,) = Run(tiny_copy).requests()
    resumed = run_cli(["forget", "--resume", request["id"]], tiny_copy)
    assert resumed.returncode == 0, resumed.stderr
    report = run_cli(["audit", "--request", request["id"]], tiny_copy)
    assert report.returncode == 0, report.stderr


def test_a_full_disk_during_the_build_is_one_line_and_the_request_resumes(tiny_copy, monkeypatch):
    import moe_unlearn.training.build as build

    record = Run(tiny_copy).registry.records(["weather"])[6].id
    before = served_files(tiny_copy)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build, "save_tensors", full)
    refused = cli("forget", "--record", record, "--run-dir", tiny_copy)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "no space left on the device" in errors[0] and "is still served" in errors[0]
    assert served_files(tiny_copy) == before  # the old version, untouched and loadable
    (request,) = Run(tiny_copy).requests()
    assert request["status"] == "running" and request["interrupted"]
    monkeypatch.undo()
    cert = Run(tiny_copy).resume(request["id"])
    assert cert["request_id"] == request["id"] and served_files(tiny_copy) != before


def test_a_base_source_forget_killed_in_the_base_training_resumes_to_the_same_files(tmp_path):
    """A full rebuild (a base-source record) killed while the base model trains, then resumed."""
    from tests.conftest import TINY
    from tests.unlearning.test_base import WITH_BASE
    from tests.unlearning.test_oracle import ids_of

    pristine = tmp_path / "pristine"
    Run(pristine).train(TINY, WITH_BASE)
    record = ids_of(pristine, "football")[0][2]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for run_dir in (reference, crashed):
        shutil.copytree(pristine, run_dir)
    assert run_cli(["forget", "--record", record], reference).returncode == 0
    assert run_cli(["forget", "--record", record], crashed, crash_at="mid-base-training").returncode == -signal.SIGKILL
    assert served_files(crashed) == served_files(pristine)  # the old version, still served
    (request,) = Run(crashed).requests()
    assert run_cli(["forget", "--resume", request["id"]], crashed).returncode == 0
    assert served_files(crashed) == served_files(reference)
