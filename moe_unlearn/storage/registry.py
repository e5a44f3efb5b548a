"""The registry: one SQLite database per run directory (sources, experts, records, versions,
forget requests and the certificate chain).

Expert order (the order of addition) is the router's stage order; base sources map to the row `base` at
position -1 (no stage). Records carry a keyed hash (HMAC-SHA256 with a key private to the run directory),
so deletion certificates can name them without their text. Writes happen in `transaction()`: all or nothing.

Forgetting has two phases. A *tombstone* (or, for a whole source or expert, a *retirement*) hides
records from every training at once; the row with the text is deleted only by the scrub after the
new version is live, with `secure_delete` so the bytes are overwritten, not just unlinked.
"""

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError
from moe_unlearn.storage.keys import load_key
from moe_unlearn.storage.schema import SCHEMA

ROLES = ("expert", "base")
BASE = "base"  # the role, and the name of the experts row its sources map to

GENESIS = "0" * 64  # prev_hash of the first certificate
REDACTED = "hmac:"  # a finished request's record ids are kept as this + their keyed hash

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class SourceInfo:
    name: str
    expert: str
    builtin: bool
    records: int
    role: str = "expert"


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
        self._key: bytes | None = None  # loaded when first needed: reading a registry writes nothing

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

    @contextmanager
    def preview(self) -> Iterator[sqlite3.Connection]:
        """A transaction that is always rolled back: see what a change would do, change nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        finally:
            self.db.execute("ROLLBACK")

    # --- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def keyed_hash(self, text: str) -> str:
        """HMAC-SHA256 of the text with this run directory's key (hex): names a record without its text."""
        if self._key is None:
            self._key = load_key(self)
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def id_hash(self, record_id: str) -> str:
        """The keyed hash naming a record id where the id itself must not stay (ids can be personal data)."""
        return self.keyed_hash(f"record-id\x00{record_id}")

    # --- experts and sources --------------------------------------------------------------------

    def add_expert(self, name: str) -> None:
        check_name("expert", name)
        position = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM experts").fetchone()[0]
        self.db.execute("INSERT INTO experts VALUES (?, ?, ?)", (name, -1 if name == BASE else position, now()))

    def add_source(self, name: str, expert: str | None, builtin: bool = False, role: str = "expert") -> None:
        """A new source mapped to `expert` (default: its own name), created at the end of the expert order if
        new; a base source maps to the base row (created with the first base source)."""
        check_name("source", name)
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if role == BASE and expert not in (None, BASE):
            raise UserError(f"a base source trains the base model, not expert {expert!r}: leave out --expert")
        expert = BASE if role == BASE else expert or name
        if role != BASE and expert == BASE:
            raise UserError("'base' is reserved for the base model: name the expert with --expert NAME")
        if self.has_source(name):
            raise UserError(f"source {name!r} already exists")
        if role == BASE and not self._has_roles():  # a registry made before roles gets the column now
            self.db.execute("ALTER TABLE sources ADD COLUMN role TEXT NOT NULL DEFAULT 'expert'")
        if not (self.base_sources() if role == BASE else expert in self.experts()):
            self.add_expert(expert)
        row = (name, expert, int(builtin), now())
        self.db.execute("INSERT INTO sources (name, expert, builtin, added_at) VALUES (?, ?, ?, ?)", row)
        if role == BASE:
            self.db.execute("UPDATE sources SET role = ? WHERE name = ?", (role, name))

    def _has_roles(self) -> bool:
        """False for a registry made before sources had a role: read as all 'expert', not written to."""
        return any(column[1] == "role" for column in self.db.execute("PRAGMA table_info(sources)"))

    def experts(self) -> list[str]:
        """Expert names in registry order (order of addition): the router's stage order."""
        rows = self.db.execute(
            "SELECT name FROM experts WHERE position >= 0 "
            "AND name NOT IN (SELECT name FROM retired WHERE kind = 'expert') ORDER BY position"
        )
        return [r[0] for r in rows]

    def has_source(self, name: str) -> bool:
        """True for a live source (not one that is being dropped)."""
        row = self.db.execute(
            "SELECT 1 FROM sources WHERE name = ? AND name NOT IN (SELECT name FROM retired WHERE kind = 'source')",
            (name,),
        ).fetchone()
        return row is not None

    def sources(self) -> list[SourceInfo]:
        """Live sources in expert order (base sources first), then by name."""
        role = "s.role" if self._has_roles() else "'expert'"
        rows = self.db.execute(
            f"SELECT s.name, s.expert, s.builtin, {role}, (SELECT COUNT(*) FROM records r WHERE r.source = s.name "
            "AND r.id NOT IN (SELECT record_id FROM tombstones)) "
            "FROM sources s JOIN experts e ON e.name = s.expert "
            "WHERE s.name NOT IN (SELECT name FROM retired WHERE kind = 'source') ORDER BY e.position, s.name"
        )
        return [SourceInfo(name, expert, bool(builtin), n, role) for name, expert, builtin, role, n in rows]

    def base_sources(self) -> list[str]:
        """Live sources of role base, by name."""
        return [s.name for s in self.sources() if s.role == BASE]

    def sources_of(self, expert: str) -> list[str]:
        rows = self.db.execute(
            "SELECT name FROM sources WHERE expert = ? "
            "AND name NOT IN (SELECT name FROM retired WHERE kind = 'source') ORDER BY name",
            (expert,),
        )
        return [r[0] for r in rows]

    def source_map(self) -> dict[str, str]:
        return {s.name: s.expert for s in self.sources()}

    # --- records --------------------------------------------------------------------------------

    def insert_records(self, records: Iterable[Record], allow_forgotten: bool = False) -> int:
        """Insert records (call inside `transaction()`); a duplicate id is a UserError naming it, and so is
        content on the forgotten blocklist unless `allow_forgotten` (then the override is recorded)."""
        n = 0
        stamp = now()
        for r in records:
            digest = self.keyed_hash(r.text)
            blocked = self.db.execute("SELECT request_id FROM forgotten WHERE hash = ?", (digest,)).fetchone()
            if blocked and not allow_forgotten:
                raise UserError(
                    f"record id {r.id!r}: its content was forgotten (request {blocked[0]}); "
                    "pass --allow-forgotten to ingest it anyway"
                )
            if blocked:
                self.allow_forgotten(r.id, r.source, digest)
            try:
                self.db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (r.id, r.source, digest, r.text, stamp))
            except sqlite3.IntegrityError:
                other = self.db.execute("SELECT source FROM records WHERE id = ?", (r.id,)).fetchone()
                where = f"already in source {other[0]!r}" if other else "unknown source"
                raise UserError(f"record id {r.id!r}: {where}") from None
            n += 1
        return n

    def records(self, sources: Iterable[str]) -> list[Record]:
        """The live (not tombstoned) records of the given sources, ordered by id."""
        names = list(sources)
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT id, source, text FROM records WHERE source IN ({marks}) "
            "AND id NOT IN (SELECT record_id FROM tombstones) ORDER BY id",
            names,
        )
        return [Record(*row) for row in rows]

    def count_records(self) -> int:
        """Live records of live sources."""
        return sum(s.records for s in self.sources())

    def record_rows(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """{id: (source, keyed hash)} for the live records among `ids`."""
        found = {}
        for record_id in ids:
            row = self.db.execute(
                "SELECT source, hash FROM records WHERE id = ? AND id NOT IN (SELECT record_id FROM tombstones)",
                (record_id,),
            ).fetchone()
            if row:
                found[record_id] = row
        return found

    def match_records(self, text: str, sources: list[str]) -> list[tuple[str, str, str]]:
        """(id, source, keyed hash) of live records of `sources` whose text contains `text` (case-sensitive)."""
        marks = ",".join("?" * len(sources))
        rows = self.db.execute(
            f"SELECT id, source, hash FROM records WHERE source IN ({marks}) AND instr(text, ?) > 0 "
            "AND id NOT IN (SELECT record_id FROM tombstones) ORDER BY id",
            [*sources, text],
        )
        return list(rows)

    def record_ids_of(self, source: str) -> list[tuple[str, str]]:
        """(id, keyed hash) of every live record of a source."""
        query = "SELECT id, hash FROM records WHERE source = ? AND id NOT IN (SELECT record_id FROM tombstones)"
        return list(self.db.execute(query + " ORDER BY id", (source,)))

    # --- forgetting -----------------------------------------------------------------------------

    def tombstone(self, request_id: str, record_ids: Iterable[str]) -> None:
        """Hide records from all training from now on and put their keyed hashes on the blocklist."""
        stamp = now()
        for record_id in record_ids:
            self.db.execute("INSERT OR IGNORE INTO tombstones VALUES (?, ?)", (record_id, request_id))
            row = self.db.execute("SELECT hash FROM records WHERE id = ?", (record_id,)).fetchone()
            if row:
                self.db.execute("INSERT OR IGNORE INTO forgotten VALUES (?, ?, ?)", (row[0], request_id, stamp))

    def retire(self, request_id: str, kind: str, name: str) -> None:
        """Hide a source or an expert (being dropped) from every training from now on."""
        self.db.execute("INSERT OR IGNORE INTO retired VALUES (?, ?, ?)", (kind, name, request_id))

    def purge(self, request_ids: list[str]) -> int:
        """Delete the rows (text included) that these requests tombstoned or retired. Returns records deleted."""
        marks = ",".join("?" * len(request_ids))
        gone = self.db.execute(
            f"DELETE FROM records WHERE id IN (SELECT record_id FROM tombstones WHERE request_id IN ({marks}))",
            request_ids,
        ).rowcount
        self.db.execute(f"DELETE FROM tombstones WHERE request_id IN ({marks})", request_ids)
        for kind, name in self.db.execute(
            f"SELECT kind, name FROM retired WHERE request_id IN ({marks})", request_ids
        ).fetchall():
            if kind == "source":
                gone += self.db.execute("DELETE FROM records WHERE source = ?", (name,)).rowcount
                self.db.execute("DELETE FROM sources WHERE name = ?", (name,))
            else:
                self.db.execute("DELETE FROM experts WHERE name = ?", (name,))
        self.db.execute(f"DELETE FROM retired WHERE request_id IN ({marks})", request_ids)
        return gone

    def compact(self) -> None:
        """Rewrite the database so deleted text is gone from every file (main, -wal, free pages)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def allow_forgotten(self, record_id: str, source: str, hash_: str) -> None:
        self.db.execute("INSERT INTO forgotten_overrides VALUES (?, ?, ?, ?)", (hash_, record_id, source, now()))

    # --- requests -------------------------------------------------------------------------------

    def add_request(self, request_id: str, kind: str, payload: dict, deadline: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO requests (id, kind, status, step, created_at, deadline, payload) "
            "VALUES (?, ?, 'pending', 'resolved', ?, ?, ?)",
            (request_id, kind, now(), deadline, json.dumps(payload, sort_keys=True)),
        )

    def add_request_records(self, request_id: str, rows: Iterable[tuple[str, str, str]]) -> None:
        """Rows of (record id, source, keyed hash): what a certificate names instead of the text."""
        self.db.executemany(
            "INSERT INTO request_records VALUES (?, ?, ?, ?)", ((request_id, i, s, h) for i, s, h in rows)
        )

    def forgotten_by(self, record_ids: Iterable[str]) -> dict[str, str]:
        """{record id: request id} for ids that a finished or unfinished request already forgets (a finished
        one holds the id's keyed hash only: see `redact_request_records`)."""
        found = {}
        for record_id in record_ids:
            row = self.db.execute(
                "SELECT r.request_id FROM request_records r JOIN requests q ON q.id = r.request_id "
                "WHERE r.record_id IN (?, ?) AND q.status != 'failed' ORDER BY q.created_at DESC",
                (record_id, REDACTED + self.id_hash(record_id)),
            ).fetchone()
            if row:
                found[record_id] = row[0]
        return found

    def redact_request_records(self, request_id: str) -> None:
        """Replace a finished request's record ids by their keyed hashes: the certificate has been written
        and nothing needs the ids again."""
        rows = self.db.execute(
            "SELECT record_id FROM request_records WHERE request_id = ? AND record_id NOT LIKE ?",
            (request_id, REDACTED + "%"),
        ).fetchall()
        self.db.executemany(
            "UPDATE request_records SET record_id = ? WHERE request_id = ? AND record_id = ?",
            [(REDACTED + self.id_hash(i), request_id, i) for (i,) in rows],
        )

    def request_records(self, request_id: str) -> list[tuple[str, str, str]]:
        rows = self.db.execute(
            "SELECT record_id, source, hash FROM request_records WHERE request_id = ? ORDER BY record_id",
            (request_id,),
        )
        return list(rows)

    def forgotten_records(self, request_ids: list[str]) -> list[Record]:
        """The records these requests forget, text included: only until the scrub deletes it."""
        marks = ",".join("?" * len(request_ids))
        rows = self.db.execute(
            f"SELECT DISTINCT r.id, r.source, r.text FROM records r JOIN request_records q ON q.record_id = r.id "
            f"WHERE q.request_id IN ({marks}) ORDER BY r.id",
            request_ids,
        )
        return [Record(*row) for row in rows]

    def update_request(self, request_id: str, **fields: object) -> None:
        for key, value in fields.items():
            if key not in {"status", "step", "started_at", "finished_at", "result", "error"}:
                raise ValueError(key)
            if key == "result":
                value = json.dumps(value, sort_keys=True)
            self.db.execute(f"UPDATE requests SET {key} = ? WHERE id = ?", (value, request_id))

    def request(self, request_id: str) -> dict | None:
        found = self._request_rows("SELECT * FROM requests WHERE id = ?", (request_id,))
        return found[0] if found else None

    def requests(self, statuses: Iterable[str] | None = None) -> list[dict]:
        """Requests in order of arrival, optionally only those with the given statuses."""
        found = self._request_rows("SELECT * FROM requests ORDER BY created_at, rowid", ())
        return [r for r in found if statuses is None or r["status"] in set(statuses)]

    def _request_rows(self, query: str, args: tuple) -> list[dict]:
        cursor = self.db.execute(query, args)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor]
        for r in rows:
            r["payload"] = json.loads(r["payload"])
            r["result"] = json.loads(r["result"]) if r["result"] else None
        return rows

    # --- certificate chain ----------------------------------------------------------------------

    def append_certificate(self, request_id: str, body: dict) -> str:
        """Append to the hash chain: hash = sha256(previous hash + canonical JSON body). Returns the hash."""
        row = self.db.execute("SELECT hash FROM certificates ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((prev + text).encode()).hexdigest()
        self.db.execute(
            "INSERT INTO certificates (request_id, created_at, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
            (request_id, now(), text, prev, digest),
        )
        return digest

    def certificates(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT seq, request_id, created_at, body, prev_hash, hash FROM certificates ORDER BY seq"
        )
        return [
            {"seq": q, "request_id": r, "created_at": t, "body": json.loads(b), "prev_hash": p, "hash": h}
            for q, r, t, b, p, h in rows
        ]

    def certificate(self, request_id: str) -> dict | None:
        """A request's certificate body with its place in the chain (`chain_hash`, `chain_seq`), or None."""
        for entry in self.certificates():
            if entry["request_id"] == request_id:
                return {**entry["body"], "chain_hash": entry["hash"], "chain_seq": entry["seq"]}
        return None

    def verify_chain(self) -> int | None:
        """The seq of the first certificate whose hash or link does not check, or None if the chain is intact."""
        prev = GENESIS
        for seq, body, prev_hash, digest in self.db.execute(
            "SELECT seq, body, prev_hash, hash FROM certificates ORDER BY seq"
        ):
            if prev_hash != prev or hashlib.sha256((prev + body).encode()).hexdigest() != digest:
                return seq
            prev = digest
        return None

    # --- versions -------------------------------------------------------------------------------

    def add_version(self, n: int, manifest: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO versions VALUES (?, ?, ?)", (n, now(), json.dumps(manifest, sort_keys=True))
        )

    def remove_versions_after(self, n: int | None) -> None:
        """Forget registry rows of versions newer than the served one (left by a crash before the switch)."""
        self.db.execute("DELETE FROM versions WHERE n > ?", (n or 0,))

    def versions(self) -> list[tuple[int, str]]:
        return list(self.db.execute("SELECT n, created_at FROM versions ORDER BY n"))

    def manifest(self, n: int) -> dict | None:
        row = self.db.execute("SELECT manifest FROM versions WHERE n = ?", (n,)).fetchone()
        return json.loads(row[0]) if row else None
