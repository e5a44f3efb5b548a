"""The key of the keyed hashes lives outside registry.db (a copy of the database alone cannot test a
guessed text against the hashes of forgotten records), readable by its owner only; a finished request
keeps its record ids as keyed hashes only, and certificates name records by keyed hash only."""

import json
import os
import shutil
import sqlite3

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.storage.keys import KEY_ENV, KEY_FILE
from moe_unlearn.storage.registry import Registry


@pytest.fixture
def run_dir(tmp_path):
    run = Run(tmp_path / "run")
    run.init(None, ["data.builtin=false"])
    (tmp_path / "mail.jsonl").write_text(json.dumps({"id": "m1", "text": "door code 241667"}) + "\n")
    run.ingest("mail", [tmp_path / "mail.jsonl"])
    return tmp_path / "run"


def test_the_key_is_a_private_file_beside_the_database_not_in_it(run_dir):
    key = run_dir / KEY_FILE
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    secret = key.read_text().strip()
    assert len(bytes.fromhex(secret)) == 32
    db = sqlite3.connect(run_dir / "registry.db")
    assert db.execute("SELECT value FROM meta WHERE key = 'hmac_key'").fetchone() is None
    dump = "\n".join(db.iterdump())
    assert secret not in dump


def test_a_key_still_in_an_older_database_moves_out_and_hashes_stay_the_same(run_dir):
    registry = Registry(run_dir / "registry.db")
    before = registry.keyed_hash("door code 241667")
    secret = (run_dir / KEY_FILE).read_text().strip()
    registry.db.execute("INSERT INTO meta VALUES ('hmac_key', ?)", (secret,))  # the old layout
    registry.db.execute("DELETE FROM meta WHERE key = 'hmac_key_sha256'")
    registry.close()
    (run_dir / KEY_FILE).unlink()
    reopened = Registry(run_dir / "registry.db")
    assert reopened.keyed_hash("door code 241667") == before
    assert (run_dir / KEY_FILE).read_text().strip() == secret
    assert reopened.get_meta("hmac_key") is None


def test_a_missing_or_wrong_or_open_key_is_refused(run_dir, tmp_path, monkeypatch):
    key = run_dir / KEY_FILE
    secret = key.read_text()
    key.unlink()
    with pytest.raises(UserError, match="key of this run directory's hashes is missing"):
        Registry(run_dir / "registry.db").keyed_hash("x")
    key.write_text("00" * 32 + "\n")
    key.chmod(0o600)
    with pytest.raises(UserError, match="does not hold this run directory's key"):
        Registry(run_dir / "registry.db").keyed_hash("x")
    key.write_text(secret)
    key.chmod(0o644)
    with pytest.raises(UserError, match="readable by others: chmod 600"):
        Registry(run_dir / "registry.db").keyed_hash("x")
    key.chmod(0o600)
    elsewhere = tmp_path / "operator.key"  # the operator keeps the key away from the run directory
    shutil.move(key, elsewhere)
    monkeypatch.setenv(KEY_ENV, str(elsewhere))
    assert Registry(run_dir / "registry.db").keyed_hash("x")
    assert not key.exists()
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "nowhere.key"))
    with pytest.raises(UserError, match="not a file"):
        Registry(run_dir / "registry.db").keyed_hash("x")


def test_a_finished_request_keeps_record_ids_as_keyed_hashes_only(tiny_copy):
    run = Run(tiny_copy)
    record = run.registry.records(["weather"])[2].id
    cert = run.forget(records=[record])
    assert [r["id_hash"] for r in cert["records"]] == [run.registry.id_hash(record)]
    assert record not in json.dumps(cert)
    db = sqlite3.connect(tiny_copy / "registry.db")
    assert record not in "\n".join(db.iterdump())  # not in request_records, nor anywhere else
    again = Run(tiny_copy).forget(records=[record])  # the same command again: the same certificate
    assert again["request_id"] == cert["request_id"]
    assert os.environ.get(KEY_ENV) is None
