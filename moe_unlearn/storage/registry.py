"""The registry: one SQLite database per run directory (sources, experts, records, versions).

Expert order (the order of addition) is the router's stage order. Records carry a keyed hash
(HMAC-SHA256 with a key private to the run directory), so deletion certificates can name them
without their text. Writes happen in `transaction()`: all or nothing.
"""

import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError

SCHEMA = """
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
"""

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class SourceInfo:
    name: str
    expert: str
    builtin: bool
    records: int


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(kind: str, name: str) -> str:
    """Source and expert names become file names: letters, digits, '_', '-', '.'; not starting with '.'."""
    if not name or not set(name) <= NAME_CHARS or name.startswith(".") or len(name) > 64:
        raise UserError(f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


class Registry:
    """The run directory's database. Open it with `Registry(path)`; it creates the schema if new."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.executescript(SCHEMA)
        if self.get_meta("hmac_key") is None:
            with self.transaction():
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('hmac_key', ?)", (secrets.token_hex(32),))
        self._key = bytes.fromhex(self.get_meta("hmac_key"))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: nothing is half-written."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def keyed_hash(self, text: str) -> str:
        """HMAC-SHA256 of the text with this run directory's key (hex): names a record without its text."""
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    # --- experts and sources --------------------------------------------------------------------

    def add_expert(self, name: str) -> None:
        check_name("expert", name)
        position = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM experts").fetchone()[0]
        self.db.execute("INSERT INTO experts VALUES (?, ?, ?)", (name, position, now()))

    def add_source(self, name: str, expert: str, builtin: bool = False) -> None:
        """A new source mapped to `expert` (created at the end of the expert order if new)."""
        check_name("source", name)
        if self.has_source(name):
            raise UserError(f"source {name!r} already exists")
        if expert not in self.experts():
            self.add_expert(expert)
        self.db.execute("INSERT INTO sources VALUES (?, ?, ?, ?)", (name, expert, int(builtin), now()))

    def experts(self) -> list[str]:
        """Expert names in registry order (order of addition): the router's stage order."""
        return [r[0] for r in self.db.execute("SELECT name FROM experts ORDER BY position")]

    def has_source(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sources WHERE name = ?", (name,)).fetchone() is not None

    def sources(self) -> list[SourceInfo]:
        rows = self.db.execute(
            "SELECT s.name, s.expert, s.builtin, (SELECT COUNT(*) FROM records r WHERE r.source = s.name) "
            "FROM sources s JOIN experts e ON e.name = s.expert ORDER BY e.position, s.name"
        )
        return [SourceInfo(name, expert, bool(builtin), n) for name, expert, builtin, n in rows]

    def sources_of(self, expert: str) -> list[str]:
        rows = self.db.execute("SELECT name FROM sources WHERE expert = ? ORDER BY name", (expert,))
        return [r[0] for r in rows]

    def source_map(self) -> dict[str, str]:
        return {s.name: s.expert for s in self.sources()}

    # --- records --------------------------------------------------------------------------------

    def insert_records(self, records: Iterable[Record]) -> int:
        """Insert records (call inside `transaction()`); a duplicate id is a UserError naming it."""
        n = 0
        stamp = now()
        for r in records:
            try:
                self.db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                    (r.id, r.source, self.keyed_hash(r.text), r.text, stamp),
                )
            except sqlite3.IntegrityError:
                other = self.db.execute("SELECT source FROM records WHERE id = ?", (r.id,)).fetchone()
                where = f"already in source {other[0]!r}" if other else "unknown source"
                raise UserError(f"record id {r.id!r}: {where}") from None
            n += 1
        return n

    def records(self, sources: Iterable[str]) -> list[Record]:
        """All records of the given sources, ordered by id."""
        names = list(sources)
        marks = ",".join("?" * len(names))
        rows = self.db.execute(f"SELECT id, source, text FROM records WHERE source IN ({marks}) ORDER BY id", names)
        return [Record(*row) for row in rows]

    def count_records(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    # --- versions -------------------------------------------------------------------------------

    def add_version(self, n: int, manifest: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO versions VALUES (?, ?, ?)", (n, now(), json.dumps(manifest, sort_keys=True))
        )

    def versions(self) -> list[tuple[int, str]]:
        return list(self.db.execute("SELECT n, created_at FROM versions ORDER BY n"))

    def manifest(self, n: int) -> dict | None:
        row = self.db.execute("SELECT manifest FROM versions WHERE n = ?", (n,)).fetchone()
        return json.loads(row[0]) if row else None
