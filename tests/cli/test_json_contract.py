"""`--json` is a contract: stdout carries exactly one JSON document and nothing else, whatever the config
(here progress bars on, as in configs/default.yaml), for every command that takes --json (`canaries`
needs a corpus with canaries, `data prepare` Debian's packages: their --json is the same `emit`); progress
and logs go to stderr. Each command runs in a process of its own, as a script would run it."""

import json

from tests.conftest import TINY, cli

PROGRESS = "trainer.progress_bar=true"


def run_json(*args) -> dict | list:
    done = cli(*args, "--json", process=True)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)  # fails on anything printed before or after the document


def test_every_json_command_prints_one_json_document_on_stdout(tmp_path):
    run_dir, other = tmp_path / "run", tmp_path / "other"
    d = ["--run-dir", run_dir]
    assert cli("init", "--config", TINY, *d, PROGRESS).returncode == 0
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": f"note number {i}: lunch at noon"}) + "\n" for i in range(30))
    )
    assert run_json("ingest", "--source", "notes", notes, *d)["records_added"] == 30
    assert run_json("train", "--config", TINY, *d, PROGRESS)["version"] == 1
    assert set(run_json("generate", "Rain", "-n", 8, *d)) >= {"text", "version"}
    assert run_json("score", "Rain later.", *d)["bytes"] == 11
    assert "eval" in run_json("evaluate", *d)
    assert run_json("registry", *d)["current_version"] == 1
    assert run_json("forget", "--record", "n3", "--dry-run", *d)
    assert run_json("forget", "--record", "n3", *d)["version_after"]["version"] == 2  # retrains, bars on
    assert run_json("verify", *d)["equal"] is True
    audited = run_json("forget", "--record", "n4", "--audit", *d)  # measures, with progress bars on stderr
    assert run_json("audit", "--request", audited["request_id"], "--out", tmp_path / "audit", *d)
    (tmp_path / "mail.jsonl").write_text(notes.read_text().replace('"n', '"m'))
    assert run_json("add", tmp_path / "mail.jsonl", "--source", "mail", *d)["version"] == 4
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "n-extra", "text": "one more note"}) + "\n")
    run_json("ingest", "--source", "notes", more, *d)
    assert run_json("update", *d)["version"] == 5
    assert run_json("drop", "--source", "mail", *d)["version_after"]["version"] == 6
    assert run_json("expert", "export", "notes", "--out", tmp_path / "notes.expert", *d)
    assert cli("init", "--config", TINY, "--run-dir", other, PROGRESS).returncode == 0
    assert run_json("ingest", "--source", "notes", notes, "--run-dir", other)
    run_json("ingest", "--source", "notes", more, "--run-dir", other)
    for n in ("n3", "n4"):  # nothing trained yet: deleted, nothing retrained
        assert run_json("forget", "--record", n, "--run-dir", other)["version_after"] is None
    assert run_json("expert", "import", tmp_path / "notes.expert", "--config", TINY, "--run-dir", other, PROGRESS)
