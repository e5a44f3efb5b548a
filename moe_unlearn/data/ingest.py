"""Parsing of user files (.txt, .jsonl) into records, streamed line by line, with one-line errors.

Files are never read whole: they are opened in binary mode and iterated by line, each line decoded as strict
UTF-8 so that a bad byte is reported with its line. Every mistake in a file raises `UserError` with a message
starting with `"{path}:{lineno}: "` (or `"{path}: "` where no line applies). Only ids and their places are
kept for duplicate detection, never texts.
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError

SUPPORTED_SUFFIXES = (".txt", ".jsonl")

_BOM = b"\xef\xbb\xbf"


def _check_path(path: Path) -> None:
    """Raise UserError unless `path` is an existing regular file with a supported suffix."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        kind = repr(path.suffix) if path.suffix else "(no suffix)"
        raise UserError(f"{path}: unsupported file type {kind}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its \\n or \\r\\n) of a UTF-8 file, skipping a leading BOM."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            skipped = len(_BOM) if lineno == 1 and raw.startswith(_BOM) else 0
            try:
                line = raw[skipped:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {skipped + e.start + 1} of the line)"
                ) from None
            yield lineno, line.removesuffix("\n").removesuffix("\r")


def _txt_records(path: Path, source: str) -> Iterator[tuple[int, Record]]:
    """Yield (start line, record) of a .txt file: records are separated by blank lines."""
    start, buf = 0, []
    for lineno, line in _lines(path):
        if line.strip():
            if not buf:
                start = lineno
            buf.append(line)
        elif buf:
            yield start, Record(id=f"{path.stem}:{start}", source=source, text="\n".join(buf).strip())
            buf = []
    if buf:
        yield start, Record(id=f"{path.stem}:{start}", source=source, text="\n".join(buf).strip())


def _jsonl_records(path: Path, source: str, id_field: str, text_field: str) -> Iterator[tuple[int, Record]]:
    """Yield (line, record) of a .jsonl file: one JSON object per non-blank line, ids unique in the file."""
    first_line: dict[str, int] = {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}:"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where} invalid JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:
            raise UserError(f"{where} invalid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where} expected a JSON object, got {type(obj).__name__}")
        if text_field not in obj:
            raise UserError(f"{where} missing field {text_field!r}")
        text = obj[text_field]
        if not isinstance(text, str):
            raise UserError(f"{where} field {text_field!r} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise UserError(f"{where} empty text in field {text_field!r}")
        if id_field not in obj:
            raise UserError(f"{where} missing field {id_field!r}")
        rid = obj[id_field]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise UserError(f"{where} field {id_field!r} must be a string or an integer, got {type(rid).__name__}")
        rid = str(rid)
        if not rid.strip():
            raise UserError(f"{where} empty id in field {id_field!r}")
        if "source" in obj and obj["source"] != source:
            raise UserError(f"{where} record source {obj['source']!r} disagrees with the source {source!r}")
        if rid in first_line:
            raise UserError(f"{where} duplicate id {rid!r} (first at line {first_line[rid]})")
        first_line[rid] = lineno
        yield lineno, Record(id=rid, source=source, text=text)


def _located_records(
    path: Path, source: str, id_field: str = "id", text_field: str = "text"
) -> Iterator[tuple[int, Record]]:
    """Yield (line, record) of one file (.txt ids are unique by construction: they hold the start line)."""
    path = Path(path)
    _check_path(path)
    if path.suffix.lower() == ".txt":
        yield from _txt_records(path, source)
    else:
        yield from _jsonl_records(path, source, id_field, text_field)


def read_records(path: Path, source: str, *, id_field: str = "id", text_field: str = "text") -> Iterator[Record]:
    """Yield the records of one file, in file order, lazily; raise UserError on the first bad line.

    .txt: records are separated by blank (empty or whitespace-only) lines; a record's text is its lines joined
    with "\\n", stripped; its id is f"{path.stem}:{n}" with n the line where the record starts.
    .jsonl: one JSON object per non-blank line, {id_field: str | int, text_field: str[, "source": str]}; int
    ids become str, other keys are ignored, and a "source" key must equal `source`.
    """
    for _, record in _located_records(path, source, id_field, text_field):
        yield record


def read_files(paths: Iterable[Path], source: str, **fields: str) -> Iterator[Record]:
    """Yield the records of several files in order (`fields`: id_field/text_field, as for `read_records`).

    All paths are checked before any record is yielded; raises UserError also for a path given twice and for
    an id repeated across files (naming both places).
    """
    paths = [Path(path) for path in paths]
    seen_paths: dict[Path, Path] = {}
    for path in paths:
        _check_path(path)
        key = path.resolve()
        if key in seen_paths:
            raise UserError(f"{path}: file given twice (also as {seen_paths[key]})")
        seen_paths[key] = path
    places: dict[str, tuple[Path, int]] = {}
    for path in paths:
        for lineno, record in _located_records(path, source, **fields):
            if record.id in places:
                first_path, first_line = places[record.id]
                raise UserError(f"{path}:{lineno}: id {record.id!r} already used at {first_path}:{first_line}")
            places[record.id] = (path, lineno)
            yield record
