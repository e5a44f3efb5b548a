"""Forget requests as a user meets them: nothing of the forgotten text survives anywhere, forgotten
content stays out, bad requests change nothing, pending requests merge, certificates are chained."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.rundir import stray_files
from moe_unlearn.storage.registry import Registry
from tests.conftest import REPO, TINY, cli
from tests.unlearning.test_oracle import ids_of


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    """A tiny run whose corpus holds canaries (secret-looking strings, each in several records)."""
    run_dir = tmp_path_factory.mktemp("canary") / "run"
    Run(run_dir).train(TINY, ["data.corpus.canaries=4", "data.corpus.canary_repeats=3", "model.expert.block_size=160"])
    return run_dir


def canary_secrets(run_dir) -> list[str]:
    from moe_unlearn.data.corpus import make_canaries

    registry = Run(run_dir).registry
    found = [c for c in make_canaries(4, 0, 3) if registry.match_records(c.secret, list(registry.source_map()))]
    assert found, "the corpus should hold canaries"
    return [c.secret for c in found]


def test_nothing_of_the_forgotten_text_survives_in_any_file(canary_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(canary_run, run_dir)
    secret = canary_secrets(run_dir)[0]
    registry = Run(run_dir).registry
    records = registry.match_records(secret, list(registry.source_map()))
    ids = [r[0] for r in records]
    marks = ",".join("?" * len(ids))
    texts = [t for (t,) in registry.db.execute(f"SELECT text FROM records WHERE id IN ({marks})", ids)]
    assert len(texts) >= 2

    outside, home = tmp_path / "cwd", tmp_path / "tmp"
    outside.mkdir(), home.mkdir()
    env = {**os.environ, "TMPDIR": str(home)}
    done = cli("forget", "--match", secret, "--run-dir", run_dir, "--json", cwd=outside, env=env)
    assert done.returncode == 0, done.stderr
    cert = json.loads(done.stdout)
    assert cert["record_count"] == len(records)

    needles = [secret.encode(), *(t.encode() for t in texts)]
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"forgotten text found in {path}"
    assert stray_files(run_dir) == []
    assert list(outside.iterdir()) == [] and list(home.iterdir()) == []  # nothing written outside the run dir
    assert secret not in done.stdout + done.stderr


def test_certificate_names_records_by_keyed_hash_only_and_the_chain_detects_edits(canary_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(canary_run, run_dir)
    secret = canary_secrets(run_dir)[1]
    run = Run(run_dir)
    cert = run.forget(match=secret, deadline="2999-01-01")
    text = json.dumps(cert)
    assert secret not in text
    assert cert["met_deadline"] is True
    assert all(len(r["keyed_hash"]) == 64 for r in cert["records"])
    assert cert["version_before"]["version"] + 1 == cert["version_after"]["version"]
    assert "bit-identical" in cert["statement"]
    second = run.forget(records=[run.registry.records(["recipes"])[0].id])
    assert second["chain_seq"] == cert["chain_seq"] + 1
    assert run.info()["certificate_chain_intact"]

    registry = Registry(run_dir / "registry.db")
    registry.db.execute("UPDATE certificates SET body = replace(body, 'forget', 'forgot') WHERE seq = 1")
    assert registry.verify_chain() == 1
    assert not Run(run_dir).info()["certificate_chain_intact"]


def test_deadlines_missed_and_overdue_show_in_the_certificate_and_the_registry(tiny_copy):
    run = Run(tiny_copy)
    late = run.forget(records=[run.registry.records(["weather"])[3].id], deadline="2001-01-01T09:00+02:00")
    assert late["met_deadline"] is False
    on_time = run.forget(records=[run.registry.records(["weather"])[4].id], deadline="2999-12-31")
    assert on_time["met_deadline"] is True
    run.registry.add_request("forget-queued", "forget", {"records": 1}, "2001-01-01T00:00:00+00:00")
    run.registry.add_request("forget-fresh", "forget", {"records": 1}, "2999-01-01T00:00:00+00:00")
    states = {r["id"]: r["deadline_status"] for r in Run(tiny_copy).requests()}
    assert states[late["request_id"]] == "missed" and states[on_time["request_id"]] == "met"
    assert states["forget-queued"] == "overdue" and states["forget-fresh"] == "pending"
    listed = cli("registry", "--run-dir", tiny_copy, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"]: r["deadline_status"] for r in json.loads(listed.stdout)["requests"]} == states
    shown = cli("registry", "--run-dir", tiny_copy)
    assert "(overdue)" in shown.stdout and "(missed)" in shown.stdout


def test_deadline_state_compares_times_not_strings():
    from datetime import datetime, timezone

    from moe_unlearn.unlearning.requests import deadline_state, parse_deadline

    due = parse_deadline("2026-06-01T12:00+02:00")  # 10:00 UTC
    assert deadline_state(due, "done", "2026-06-01T10:30:00+00:00") == "missed"  # a string compare says met
    assert deadline_state(due, "done", "2026-06-01T09:59:00+00:00") == "met"
    assert (
        deadline_state(due, "failed", "2026-06-01T09:00:00+00:00", at=datetime(2026, 7, 1, tzinfo=timezone.utc))
        == "overdue"
    )
    assert deadline_state(None, "done", None) is None


def test_forgotten_content_is_refused_by_ingest_unless_allowed(tiny_copy, tmp_path):
    run = Run(tiny_copy)
    record = run.registry.records(["weather"])[5]
    run.forget(records=[record.id])
    path = tmp_path / "again.jsonl"
    path.write_text(json.dumps({"id": "again-1", "text": record.text}) + "\n")
    refused = cli("ingest", "--source", "weather", path, "--run-dir", tiny_copy)
    assert refused.returncode == 2
    assert "forgotten" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert Run(tiny_copy).registry.record_rows(["again-1"]) == {}
    allowed = cli("ingest", "--source", "weather", path, "--allow-forgotten", "--run-dir", tiny_copy)
    assert allowed.returncode == 0, allowed.stderr
    overrides = Registry(tiny_copy / "registry.db").db.execute("SELECT record_id FROM forgotten_overrides").fetchall()
    assert overrides == [("again-1",)]


def test_bad_requests_exit_2_with_one_line_and_change_nothing(tiny_copy, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("recipes-000001\n  recipes-000002\n")
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"id": "x1", "text": "hello", "source": "other"}) + "\n")
    single = tmp_path / "single"
    Run(single).train(TINY, ["data.corpus.domains=1"])
    cases = [
        (["forget", "--source", "nope", "--record", "recipes-000001"], tiny_copy, "unknown source"),
        (["forget", "--record", "no-such-id"], tiny_copy, "unknown record id"),
        (["forget", "--match", "zzz-no-such-text-zzz"], tiny_copy, "matches no record"),
        (["forget", "--ids-file", ids], tiny_copy, "malformed"),
        (["forget"], tiny_copy, "exactly one of"),
        (["forget", "--record", "recipes-000001", "--deadline", "soon"], tiny_copy, "ISO date"),
        (["drop", "--source", "nope"], tiny_copy, "unknown source"),
        (["drop", "--expert", "nope"], tiny_copy, "unknown expert"),
        (["drop", "--expert", "recipes"], single, "last expert"),
        (["add", "--source", "news", jsonl], tiny_copy, "source"),
        (["add", "--source", "weather", jsonl], tiny_copy, "already exists"),
    ]
    for args, run_dir, message in cases:
        before = sorted((p.name, p.stat().st_size) for p in run_dir.rglob("*.safetensors"))
        result = cli(*args, "--run-dir", run_dir)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert sorted((p.name, p.stat().st_size) for p in run_dir.rglob("*.safetensors")) == before
        assert Run(run_dir).requests() == []
    assert not Run(tiny_copy).registry.has_source("news")


def test_dry_run_lists_what_would_go_and_changes_nothing(tiny_copy):
    run = Run(tiny_copy)
    before = run.info()
    ids = [r.id for r in run.registry.records(["recipes"])[:3]]
    plan = run.forget(records=ids, source="recipes", dry_run=True)
    assert plan["dry_run"] and [r["id"] for r in plan["records"]] == ids
    assert plan["would_retrain"] == {
        "base": False,
        "full_rebuild": False,
        "experts": ["recipes"],
        "router_stages": [0, 1, 2],
    }
    assert run.info()["records"] == before["records"] and run.requests() == []


def test_pending_requests_merge_into_one_retrain_per_expert(tiny_copy):
    run = Run(tiny_copy)
    weather = [r.id for r in run.registry.records(["weather"])]
    first = run.forget(records=weather[:2], wait=False)
    second = run.forget(records=weather[2:4], wait=False)
    assert first["status"] == second["status"] == "pending"
    cert = run.resume(first["request_id"])
    assert cert["merged_with"] == [second["request_id"]]
    assert cert["retrained"]["experts"] == ["weather"]
    other = run.certificate(second["request_id"])
    assert other["version_after"] == cert["version_after"]
    assert [r["status"] for r in run.requests()] == ["done", "done"]


def test_a_request_arriving_while_a_job_runs_queues_and_is_not_lost(tiny_copy):
    record = Run(tiny_copy).registry.records(["code"])[3].id
    with open(tiny_copy / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a job is running
        proc = subprocess.Popen(
            [sys.executable, "-m", "moe_unlearn", "forget", "--record", record, "--run-dir", tiny_copy, "--json"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("waiting for the job" in line for line in err_lines):  # it reached the lock
            assert proc.poll() is None and time.monotonic() < deadline, "".join(err_lines)
            time.sleep(0.05)
        assert [r["status"] for r in Run(tiny_copy).requests()] == ["pending"]
        time.sleep(0.5)
        assert proc.poll() is None  # still queued behind the running job
        fcntl.flock(lock, fcntl.LOCK_UN)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 0, "".join(err_lines)
    reader.join(timeout=10)
    assert json.loads(out)["records"][0]["id_hash"] == Run(tiny_copy).registry.id_hash(record)
    assert Run(tiny_copy).requests()[0]["status"] == "done"


def test_forgetting_every_record_of_an_expert_is_refused_with_advice(tiny_copy):
    with pytest.raises(UserError, match="drop it instead"):
        Run(tiny_copy).forget(match="Ingredients", source="recipes")
    assert Run(tiny_copy).requests() == []


def test_run_directory_is_never_adopted_over_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        Run(tmp_path).train(TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_corrupt_file_of_the_served_version_stops_a_forget_before_the_switch(tiny_copy):
    """A file the forget would reuse (another expert's) with one byte flipped: the forget fails with one
    line naming it, the served version stays, and once the file is restored the request resumes."""
    run = Run(tiny_copy)
    version = run.info()["manifest"]["version"]
    corrupt = tiny_copy / "versions" / str(version) / "experts" / "code.safetensors"
    original = corrupt.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    record = ids_of(tiny_copy, "weather")[0][0]
    with pytest.raises(UserError, match=r"corrupt model file .*experts/code\.safetensors"):
        run.forget(records=[record])
    assert Run(tiny_copy).info()["manifest"]["version"] == version  # still served
    corrupt.write_bytes(original)
    certificate = Run(tiny_copy).forget(records=[record])
    assert certificate["retrained"]["experts"] == ["weather"]
    assert Run(tiny_copy).info()["manifest"]["version"] == version + 1
