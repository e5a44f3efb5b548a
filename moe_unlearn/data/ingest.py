"""Parsing of user files (.txt, .jsonl) into records, streamed line by line, with one-line errors.

Files are never read whole: they are opened in binary mode and iterated by line, each line decoded as strict
UTF-8 so that a bad byte is reported with its line. Every mistake in a file raises `UserError` with a message
starting with `"{path}:{lineno}: "` (or `"{path}: "` where no line applies). Only ids and their places are
kept for duplicate detection (one dict entry per record), never texts.

`read_files(..., progress=bar)` with a bar from `progress_bar(console)` shows the bytes read as it goes.
"""

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError

SUPPORTED_SUFFIXES = (".txt", ".jsonl")

_BOM = b"\xef\xbb\xbf"
_PROGRESS_STEP = 1 << 20  # bytes read between two updates of the progress bar
_LINE_BITS = 40  # an id's place, (number of the file, line), is kept as one int: number << 40 | line


@contextmanager
def progress_bar(console: Console | None) -> Iterator[Progress]:
    """A transient progress bar on `console` for `read_files(..., progress=...)` (one task per call, named
    after the file being read). Nothing is shown when `console` is None."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=console is None, transient=True) as progress:
        yield progress


def _check_path(path: Path) -> None:
    """Raise UserError unless `path` is an existing regular file with a supported suffix."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        kind = repr(path.suffix) if path.suffix else "(no suffix)"
        raise UserError(f"{path}: unsupported file type {kind}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


def _lines(path: Path, on_read: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its \\n or \\r\\n) of a UTF-8 file, skipping a leading BOM;
    `on_read(n)` is told of the bytes read, about every `_PROGRESS_STEP` bytes and at the end."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    unreported = 0
    with f:
        for lineno, raw in enumerate(f, start=1):
            if on_read is not None:
                unreported += len(raw)
                if unreported >= _PROGRESS_STEP:
                    on_read(unreported)
                    unreported = 0
            skipped = len(_BOM) if lineno == 1 and raw.startswith(_BOM) else 0
            try:
                line = raw[skipped:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {skipped + e.start + 1} of the line)"
                ) from None
            yield lineno, line.removesuffix("\n").removesuffix("\r")
    if on_read is not None and unreported:
        on_read(unreported)


def _txt_records(path: Path, source: str, on_read: Callable[[int], None] | None) -> Iterator[tuple[int, Record]]:
    """Yield (start line, record) of a .txt file: records are separated by blank lines."""
    start, buf = 0, []
    for lineno, line in _lines(path, on_read):
        if line.strip():
            if not buf:
                start = lineno
            buf.append(line)
        elif buf:
            yield start, Record(id=f"{path.stem}:{start}", source=source, text="\n".join(buf).strip())
            buf = []
    if buf:
        yield start, Record(id=f"{path.stem}:{start}", source=source, text="\n".join(buf).strip())


def _jsonl_records(
    path: Path,
    source: str,
    id_field: str,
    text_field: str,
    on_read: Callable[[int], None] | None,
    counts: dict[str, int] | None = None,
) -> Iterator[tuple[int, Record]]:
    """Yield (line, record) of a .jsonl file: one JSON object per non-blank line (ids not checked for repeats)."""
    for lineno, line in _lines(path, on_read):
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
        if isinstance(rid, int) and counts is not None:
            counts["integer_ids"] = counts.get("integer_ids", 0) + 1
        rid = str(rid)
        if not rid.strip():
            raise UserError(f"{where} empty id in field {id_field!r}")
        if "source" in obj and obj["source"] != source:
            raise UserError(f"{where} record source {obj['source']!r} disagrees with the source {source!r}")
        yield lineno, Record(id=rid, source=source, text=text)


def _unique_records(
    paths: list[Path],
    source: str,
    id_field: str = "id",
    text_field: str = "text",
    on_read: Callable[[int], None] | None = None,
    on_file: Callable[[Path], None] | None = None,
    nonempty: bool = False,
    counts: dict[str, int] | None = None,
) -> Iterator[Record]:
    """Yield the records of `paths` in order, raising UserError at the first id seen before: "duplicate id"
    within a file, "already used at FILE:LINE" across files (and, with `nonempty`, for a file without any
    record). Each id's place is one packed int."""
    places: dict[str, int] = {}
    for number, path in enumerate(paths):
        _check_path(path)
        if on_file is not None:
            on_file(path)
        if path.suffix.lower() == ".txt":
            located = _txt_records(path, source, on_read)
        else:
            located = _jsonl_records(path, source, id_field, text_field, on_read, counts)
        found = 0
        for lineno, record in located:
            found += 1
            place = places.setdefault(record.id, number << _LINE_BITS | lineno)
            first_number, first_line = place >> _LINE_BITS, place & ((1 << _LINE_BITS) - 1)
            if first_number != number:
                first = f"{paths[first_number]}:{first_line}"
                raise UserError(f"{path}:{lineno}: id {record.id!r} already used at {first}")
            if first_line != lineno:
                raise UserError(f"{path}:{lineno}: duplicate id {record.id!r} (first at line {first_line})")
            yield record
        if nonempty and not found:  # an ingest of an empty or blank file is a mistake worth one line
            raise UserError(f"{path}: no records in the file (it is empty or blank)")


def read_records(path: Path, source: str, *, id_field: str = "id", text_field: str = "text") -> Iterator[Record]:
    """Yield the records of one file, in file order, lazily; raise UserError on the first bad line.

    .txt: records are separated by blank (empty or whitespace-only) lines; a record's text is its lines joined
    with "\\n", stripped; its id is f"{path.stem}:{n}" with n the line where the record starts.
    .jsonl: one JSON object per non-blank line, {id_field: str | int, text_field: str[, "source": str]}; int
    ids become str, other keys are ignored, a "source" key must equal `source`, and ids are unique.
    """
    yield from _unique_records([Path(path)], source, id_field, text_field)


def read_files(
    paths: Iterable[Path],
    source: str,
    *,
    id_field: str = "id",
    text_field: str = "text",
    progress: Progress | None = None,
    counts: dict[str, int] | None = None,
) -> Iterator[Record]:
    """Yield the records of several files in order (`id_field`/`text_field` as for `read_records`).
    `counts["integer_ids"]`, if given, counts the JSON integer ids (stored as their decimal text).

    All paths are checked before any record is yielded; raises UserError also for a path given twice, for
    an id repeated across files (naming both places) and for a file without any record. With `progress`
    (see `progress_bar`), the bytes read are shown.
    """
    paths = [Path(path) for path in paths]
    seen_paths: dict[Path, Path] = {}
    for path in paths:
        _check_path(path)
        key = path.resolve()
        if key in seen_paths:
            raise UserError(f"{path}: file given twice (also as {seen_paths[key]})")
        seen_paths[key] = path
    if progress is None:
        yield from _unique_records(paths, source, id_field, text_field, nonempty=True, counts=counts)
        return
    task = progress.add_task(f"ingest {source}", total=sum(path.stat().st_size for path in paths))
    yield from _unique_records(
        paths,
        source,
        id_field,
        text_field,
        on_read=lambda n: progress.advance(task, n),
        on_file=lambda path: progress.update(task, description=f"ingest {source}: {escape(path.name)}"),
        nonempty=True,
        counts=counts,
    )
