"""Source roles: a base source (declared never to need forgetting) trains the shared base model, is no
expert and no router stage; registries made before roles keep working, untouched until a base source."""

import hashlib
import json
import secrets
import sqlite3

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.config import load_config
from moe_unlearn.storage.registry import BASE, ROLES, Registry
from moe_unlearn.unlearning import oracle
from moe_unlearn.unlearning.requests import resolve_drop

# The schema registries were created with before sources had a role (release of 2026-12-02 and earlier).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experts (
    name TEXT PRIMARY KEY, position INTEGER UNIQUE NOT NULL, added_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, expert TEXT NOT NULL REFERENCES experts(name),
    builtin INTEGER NOT NULL, added_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, source TEXT NOT NULL REFERENCES sources(name),
    hash TEXT NOT NULL, text TEXT NOT NULL, added_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_source ON records(source);
CREATE TABLE IF NOT EXISTS versions (n INTEGER PRIMARY KEY, created_at TEXT NOT NULL, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, step TEXT NOT NULL,
    created_at TEXT NOT NULL, deadline TEXT, started_at TEXT, finished_at TEXT,
    payload TEXT NOT NULL, result TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS request_records (
    request_id TEXT NOT NULL REFERENCES requests(id), record_id TEXT NOT NULL,
    source TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (request_id, record_id));
CREATE TABLE IF NOT EXISTS tombstones (record_id TEXT PRIMARY KEY, request_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retired (
    kind TEXT NOT NULL, name TEXT NOT NULL, request_id TEXT NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS forgotten (hash TEXT PRIMARY KEY, request_id TEXT NOT NULL, forgotten_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten_overrides (
    hash TEXT NOT NULL, record_id TEXT NOT NULL, source TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL, created_at TEXT NOT NULL,
    body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""


@pytest.fixture
def empty_run(tmp_path):
    run = Run(tmp_path / "run")
    run._open(load_config(overrides=["data.builtin=false"]))
    return run


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("It is a truth universally acknowledged.\n\nCall me Ishmael.\n")
    return path


def _old_registry(path):
    """A registry.db as the release before roles left it: WAL mode, its key, one expert with one source."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    stamp = "2026-12-01T00:00:00+00:00"
    db.execute("INSERT INTO meta VALUES ('hmac_key', ?)", (secrets.token_hex(32),))
    db.execute("INSERT INTO experts VALUES ('mail', 0, ?)", (stamp,))
    db.execute("INSERT INTO sources VALUES ('mail', 'mail', 0, ?)", (stamp,))
    db.execute("INSERT INTO records VALUES ('m1', 'mail', 'h', 'hello', ?)", (stamp,))
    db.close()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_roles():
    assert ROLES == ("expert", "base") and BASE == "base"


def test_a_base_source_keeps_its_role_and_is_neither_an_expert_nor_a_stage(empty_run, texts):
    added = empty_run.ingest("gutenberg", [texts], role="base")
    assert added == {"source": "gutenberg", "expert": "base", "role": "base", "records_added": 2}
    assert empty_run.ingest("mail", [_other(texts, "lunch at noon?")])["role"] == "expert"
    empty_run.ingest("classics", [_other(texts, "Happy families are all alike.")], role="base")
    registry = empty_run.registry
    assert registry.experts() == ["mail"]  # the router's stage order: no base
    assert registry.base_sources() == ["classics", "gutenberg"]
    assert registry.sources_of("base") == ["classics", "gutenberg"]
    assert registry.source_map() == {"classics": "base", "gutenberg": "base", "mail": "mail"}
    info = empty_run.info()
    assert [(s["name"], s["expert"], s["role"]) for s in info["sources"]] == [
        ("classics", "base", "base"),
        ("gutenberg", "base", "base"),
        ("mail", "mail", "expert"),
    ]
    assert info["experts"] == ["mail"] and info["records"] == 4
    assert empty_run.ingest("gutenberg", [_other(texts, "Reader, I married him.")])["role"] == "base"  # kept


def _other(texts, text):
    """A .txt file of one record, next to `texts`."""
    path = texts.parent / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "source, kwargs, message",
    [
        ("gutenberg", {"role": "bse"}, r"^unknown role 'bse'; roles: expert, base$"),
        ("gutenberg", {"role": "base", "expert": "kitchen"}, "a base source trains the base model, not expert"),
        ("menus", {"expert": "base"}, "'base' is reserved for the base model: name the expert with --expert NAME"),
        ("base", {}, "'base' is reserved for the base model: name the expert with --expert NAME"),
        ("mail", {"role": "base"}, "source 'mail' has role 'expert', not 'base'"),
        ("mail", {"role": "nope"}, "unknown role 'nope'"),
    ],
)
def test_a_role_that_does_not_fit_is_refused_and_changes_nothing(empty_run, texts, source, kwargs, message):
    empty_run.ingest("mail", [_other(texts, "kept")])
    before = empty_run.info()
    with pytest.raises(UserError, match=message):
        empty_run.ingest(source, [texts], **kwargs)
    assert empty_run.info() == before


def test_a_source_named_base_can_have_another_expert(empty_run, texts):
    assert empty_run.ingest("base", [texts], expert="basics")["expert"] == "basics"
    assert empty_run.registry.experts() == ["basics"] and empty_run.registry.base_sources() == []


def test_a_registry_from_before_roles_reads_as_experts_and_is_not_written_to(tmp_path):
    path = tmp_path / "registry.db"
    _old_registry(path)
    before = _sha256(path)
    registry = Registry(path)
    assert [(s.name, s.expert, s.role, s.records) for s in registry.sources()] == [("mail", "mail", "expert", 1)]
    assert registry.experts() == ["mail"] and registry.base_sources() == []
    assert registry.source_map() == {"mail": "mail"}
    registry.close()
    assert _sha256(path) == before
    assert {p.name for p in tmp_path.iterdir()} == {"registry.db"}


def test_a_registry_from_before_roles_gets_the_column_with_its_first_base_source(tmp_path):
    path = tmp_path / "registry.db"
    _old_registry(path)
    registry = Registry(path)
    with registry.transaction():
        registry.add_source("notes", None)  # an expert source needs no column
    assert "role" not in {c[1] for c in registry.db.execute("PRAGMA table_info(sources)")}
    with registry.transaction():
        registry.add_source("gutenberg", None, role="base")
    assert "role" in {c[1] for c in registry.db.execute("PRAGMA table_info(sources)")}
    assert [(s.name, s.role) for s in registry.sources()] == [
        ("gutenberg", "base"),
        ("mail", "expert"),
        ("notes", "expert"),
    ]
    assert registry.experts() == ["mail", "notes"]
    registry.close()
    reopened = Registry(path)
    assert reopened.base_sources() == ["gutenberg"]


def test_a_failed_first_base_ingest_leaves_an_old_registry_as_it_was(tmp_path):
    path = tmp_path / "registry.db"
    _old_registry(path)
    registry = Registry(path)
    with pytest.raises(RuntimeError), registry.transaction():
        registry.add_source("gutenberg", None, role="base")
        raise RuntimeError("the ingest failed")
    assert "role" not in {c[1] for c in registry.db.execute("PRAGMA table_info(sources)")}
    assert [(s.name, s.role) for s in registry.sources()] == [("mail", "expert")]


def test_drop_expert_base_is_refused_and_the_last_base_source_takes_the_base_with_it(empty_run, texts):
    empty_run.ingest("gutenberg", [texts], role="base")
    empty_run.ingest("mail", [_other(texts, "lunch?")])
    registry = empty_run.registry
    with pytest.raises(UserError, match=r"^the base model is not an expert: drop its sources \(--source NAME\)$"):
        resolve_drop(registry, expert="base")
    with pytest.raises(UserError, match="'mail': it is the last expert"):
        resolve_drop(registry, source="mail")
    payload = resolve_drop(registry, source="gutenberg")  # one real expert stays: allowed
    assert payload["sources"] == ["gutenberg"] and payload["experts"] == ["base"]
    with registry.transaction():  # what a drop job does: retire, then (after the switch) purge
        registry.retire("drop-1", "source", "gutenberg")
        registry.retire("drop-1", "expert", "base")
    assert registry.base_sources() == [] and registry.experts() == ["mail"]
    with registry.transaction():
        assert registry.purge(["drop-1"]) == 2
    assert registry.db.execute("SELECT name FROM experts").fetchall() == [("mail",)]
    empty_run.ingest("classics", [_other(texts, "Happy families.")], role="base")  # a new base row
    assert registry.base_sources() == ["classics"] and registry.experts() == ["mail"]


def test_a_base_source_with_a_sibling_leaves_the_base(empty_run, texts):
    empty_run.ingest("gutenberg", [texts], role="base")
    empty_run.ingest("classics", [_other(texts, "Happy families.")], role="base")
    empty_run.ingest("mail", [_other(texts, "lunch?")])
    assert resolve_drop(empty_run.registry, source="gutenberg")["experts"] == []


def test_the_oracle_rebuilds_each_source_with_its_role(tiny_copy, tmp_path, texts, monkeypatch):
    run = Run(tiny_copy)
    run.ingest("gutenberg", [texts], role="base")
    work = tmp_path / "oracle"
    work.mkdir()
    oracle.export_retained(tiny_copy, run.registry, work)
    exported = json.loads((work / "sources.json").read_text())
    assert exported[0] == ["gutenberg", "base", "base"]  # base sources first
    assert exported[1:] == [
        ["recipes", "recipes", "expert"],
        ["weather", "weather", "expert"],
        ["code", "code", "expert"],
    ]
    monkeypatch.setattr(oracle, "build_version", lambda run_dir, registry, cfg, **kw: registry.sources())
    rebuilt = oracle.train_oracle(work)
    assert [(s.name, s.expert, s.role, s.records) for s in rebuilt] == [
        (s.name, s.expert, s.role, s.records) for s in run.registry.sources()
    ]


def test_the_oracle_reads_sources_exported_before_roles_as_experts(tiny_copy, tmp_path, monkeypatch):
    work = tmp_path / "oracle"
    work.mkdir()
    oracle.export_retained(tiny_copy, Run(tiny_copy).registry, work)
    old = [entry[:2] for entry in json.loads((work / "sources.json").read_text())]
    (work / "sources.json").write_text(json.dumps(old))
    monkeypatch.setattr(oracle, "build_version", lambda run_dir, registry, cfg, **kw: registry.sources())
    assert {s.role for s in oracle.train_oracle(work)} == {"expert"}
