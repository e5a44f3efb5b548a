"""The registry's tables (SQLite): sources and their experts, records (text and keyed hash), versions,
forget and drop requests with their records, tombstones, the blocklist of forgotten hashes and the
hash-chained certificates. `Registry` (registry.py) creates them when missing."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experts (
    name TEXT PRIMARY KEY, position INTEGER UNIQUE NOT NULL, added_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, expert TEXT NOT NULL REFERENCES experts(name),
    builtin INTEGER NOT NULL, added_at TEXT NOT NULL, role TEXT NOT NULL DEFAULT 'expert');
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
