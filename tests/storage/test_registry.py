"""The record store: ingest round trip, keyed hashes, all-or-nothing on bad input."""

import json
import sqlite3

import pytest

from moe_unlearn import Run, UserError
from tests.cli.test_cli import cli


@pytest.fixture
def empty_run(tmp_path):
    """A run directory without the built-in corpus (created by a config-less ingest otherwise)."""
    run = Run(tmp_path / "run")
    run._open(_no_builtin())
    return run


def _no_builtin():
    from moe_unlearn.config import load_config

    return load_config(overrides=["data.builtin=false"])


def test_new_run_directory_holds_the_builtin_corpus_once(tmp_path):
    run_dir = tmp_path / "run"
    notes = tmp_path / "notes.txt"
    notes.write_text("one\n\ntwo\n")
    assert cli("ingest", "--source", "notes", notes, "--run-dir", run_dir).returncode == 0
    info = Run(run_dir).info()
    counts = {s["name"]: s["records"] for s in info["sources"]}
    base = {"basketball": 1000, "clinical": 1000, "football": 1000, "reviews": 1000}  # the default's base sources
    assert counts == {**base, "recipes": 1000, "weather": 1000, "code": 1000, "legal": 1000, "notes": 2}
    assert info["experts"] == ["recipes", "weather", "code", "legal", "notes"]  # order of addition
    assert [s["builtin"] for s in info["sources"]] == [True] * 8 + [False]
    assert [s["role"] for s in info["sources"]] == ["base"] * 4 + ["expert"] * 5


def test_ingest_round_trip_with_keyed_hashes(empty_run, tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": "r1", "text": "alpha beta"}\n{"id": 2, "text": "gamma", "source": "mail"}\n')
    result = empty_run.ingest("mail", [jsonl])
    assert result == {"source": "mail", "expert": "mail", "role": "expert", "records_added": 2, "integer_ids": 1}
    db = sqlite3.connect(empty_run.run_dir / "registry.db")
    rows = db.execute("SELECT id, source, hash, text FROM records ORDER BY id").fetchall()
    assert [(r[0], r[1], r[3]) for r in rows] == [("2", "mail", "gamma"), ("r1", "mail", "alpha beta")]
    registry = empty_run.registry
    assert rows[1][2] == registry.keyed_hash("alpha beta")
    import hashlib

    assert rows[1][2] != hashlib.sha256(b"alpha beta").hexdigest()  # keyed, not a plain hash


def test_ingest_into_a_shared_expert(empty_run, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first")
    b.write_text("second")
    empty_run.ingest("menus", [a], expert="kitchen")
    empty_run.ingest("recipes2", [b], expert="kitchen")
    assert empty_run.info()["experts"] == ["kitchen"]
    with pytest.raises(UserError, match="belongs to expert 'kitchen'"):
        empty_run.ingest("menus", [b], expert="other")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "x", "text": "ok"}\n{"id": "y", "text": "ok", "source": "web"}\n', r"b\.jsonl:2: .*disagrees"),
        ('{"id": "x", "text": "ok"}\n{"id": "x", "text": "again"}\n', r"b\.jsonl:2: duplicate id"),
        ('{"id": "x", "text": "ok"}\n{"id": "z", "text": "  "}\n', r"b\.jsonl:2: empty text"),
        ('{"id": "x", "text": "ok"}\n{"id": "z", "text": "ok"\n', r"b\.jsonl:2: invalid JSON"),
        ('{"id": "exists", "text": "dup of the store"}\n', "record id 'exists': already in source 'mail'"),
    ],
)
def test_bad_ingest_changes_nothing(empty_run, tmp_path, content, message):
    good = tmp_path / "a.jsonl"
    good.write_text('{"id": "exists", "text": "kept"}\n')
    empty_run.ingest("mail", [good])
    bad = tmp_path / "b.jsonl"
    bad.write_text(content)
    before = empty_run.registry.count_records()
    with pytest.raises(UserError, match=message):
        empty_run.ingest("mail", [bad])
    assert empty_run.registry.count_records() == before


def test_bad_ingest_through_the_cli_is_exit_2_and_names_the_line(tmp_path):
    run_dir = tmp_path / "run"
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "\xff"}\n')
    result = cli("ingest", "--source", "web", bad, "--run-dir", run_dir)
    assert result.returncode == 2
    assert "bad.jsonl:2:" in result.stderr and "UTF-8" in result.stderr
    assert cli("ingest", "--source", "web", tmp_path / "missing.txt", "--run-dir", run_dir).returncode == 2
    assert not run_dir.exists()  # a refused first ingest leaves no run directory (defect 9 of issue [4/5])
    (tmp_path / "ok.txt").write_text("fine\n")
    assert cli("ingest", "--source", "notes", tmp_path / "ok.txt", "--run-dir", run_dir).returncode == 0
    assert cli("ingest", "--source", "web", bad, "--run-dir", run_dir).returncode == 2
    info = json.loads(cli("registry", "--run-dir", run_dir, "--json").stdout)
    assert "web" not in [s["name"] for s in info["sources"]]  # the new source itself was rolled back


def test_registry_of_a_missing_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no run directory at"):
        _ = Run(tmp_path / "nothing").registry
    assert not (tmp_path / "nothing").exists()  # reading never creates one
