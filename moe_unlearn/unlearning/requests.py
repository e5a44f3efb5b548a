"""Resolve what a forget or drop request means, before anything changes.

A request is stored as record ids plus keyed hashes (never the text, never a `--match` string) and
waits as `pending` until a job picks it up (see `job.py`). Every check a user can fail is made here,
so a bad request is refused with one line and leaves the registry untouched.
"""

import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from moe_unlearn.errors import UserError
from moe_unlearn.storage.registry import BASE, Registry

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_request_id(kind: str) -> str:
    return f"{kind}-{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(4)}"


def parse_deadline(deadline: str | None) -> str | None:
    """An ISO date or date-time (UTC if no zone given), normalised; None stays None."""
    if deadline is None:
        return None
    try:
        when = datetime.fromisoformat(deadline)
    except ValueError:
        raise UserError(
            f"--deadline {deadline!r}: expected an ISO date such as 2026-12-31 or 2026-12-31T17:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.isoformat(timespec="seconds")


def deadline_state(
    deadline: str | None, status: str, finished_at: str | None, at: datetime | None = None
) -> str | None:
    """Where a request stands against its deadline: None (none set); a done request "met" or "missed" it
    (finished by then or not); any other "pending" until the deadline passes, then "overdue"."""
    if deadline is None:
        return None
    due = datetime.fromisoformat(deadline)
    if status == "done" and finished_at is not None:
        return "met" if datetime.fromisoformat(finished_at) <= due else "missed"
    return "pending" if (at or datetime.now(timezone.utc)) <= due else "overdue"


def read_ids_file(path: Path) -> dict[str, int]:
    """{record id: line} of a file of one id per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    ids = {}
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}:{lineno}: not valid UTF-8") from None
        if not line.strip() or line.startswith("#"):
            continue
        if line != line.strip() or _CONTROL.search(line):
            raise UserError(f"{path}:{lineno}: malformed id (surrounding spaces or control characters)")
        ids.setdefault(line, lineno)
    if not ids:
        raise UserError(f"{path}: no record ids in the file")
    return ids


def resolve_forget(
    registry: Registry,
    *,
    record_ids: Sequence[str] = (),
    match: str | None = None,
    ids_file: Path | None = None,
    source: str | None = None,
) -> tuple[list[tuple[str, str, str]], dict]:
    """(rows of (record id, source, keyed hash), payload) for a forget request; UserError if it
    names nothing, an unknown source or an unknown record."""
    given = [x for x in (record_ids, match, ids_file) if x]
    if len(given) != 1:
        raise UserError("name the records to forget with exactly one of --record, --match or --ids-file")
    if source is not None and not registry.has_source(source):
        raise UserError(f"unknown source {source!r}; sources: {', '.join(registry.source_map()) or 'none'}")
    sources = [source] if source else list(registry.source_map())
    where = f" in source {source!r}" if source else ""
    if match is not None:
        rows = registry.match_records(match, sources)
        if not rows:
            raise UserError(f"--match matches no record{where}")
        how = "match"
    else:
        lines = read_ids_file(Path(ids_file)) if ids_file else {}
        ids = list(lines) if ids_file else list(record_ids)
        found = registry.record_rows(ids)
        for record_id in ids:
            place = f"{ids_file}:{lines[record_id]}: " if ids_file else ""
            if record_id not in found:
                raise UserError(f"{place}unknown record id {record_id!r}")
            if source is not None and found[record_id][0] != source:
                raise UserError(f"{place}record {record_id!r} is in source {found[record_id][0]!r}, not {source!r}")
        rows = [(record_id, *found[record_id]) for record_id in dict.fromkeys(ids)]
        how = "ids-file" if ids_file else "record"
    return rows, {"how": how, "source": source, "records": len(rows)}


def resolve_drop(registry: Registry, *, source: str | None = None, expert: str | None = None) -> dict:
    """The payload of a drop request: which sources and experts go (the base row with the last base
    source). UserError for unknown names, for `--expert base` or for dropping the last expert."""
    if (source is None) == (expert is None):
        raise UserError("name exactly one of --source or --expert to drop")
    source_map, experts = registry.source_map(), registry.experts()
    if source is not None:
        if source not in source_map:
            raise UserError(f"unknown source {source!r}; sources: {', '.join(source_map) or 'none'}")
        owner = source_map[source]
        siblings = [s for s, e in source_map.items() if e == owner and s != source]
        sources, gone = [source], ([] if siblings else [owner])
    else:
        if expert == BASE and BASE not in experts:  # an expert named 'base' from before roles can go
            raise UserError("the base model is not an expert: drop its sources (--source NAME)")
        if expert not in experts:
            raise UserError(f"unknown expert {expert!r}; experts: {', '.join(experts) or 'none'}")
        sources, gone = [s for s, e in source_map.items() if e == expert], [expert]
    if gone and gone[0] in experts and len(experts) == 1:  # the base row is no expert
        raise UserError(f"cannot drop {gone[0]!r}: it is the last expert (a model needs at least one)")
    return {"sources": sources, "experts": gone, "source": source, "expert": expert}


def drop_rows(registry: Registry, payload: dict) -> list[tuple[str, str, str]]:
    """(record id, source, keyed hash) of every live record a drop removes."""
    return [(i, s, h) for s in payload["sources"] for i, h in registry.record_ids_of(s)]
