"""Debian's dictd dictionaries (jargon, foldoc, devil, vera, gcide) as JSONL sources, one record per entry.

A dictd dictionary is two files: `NAME.index`, lines `headword<TAB>offset<TAB>length` (a fourth field, the
original headword, is written by `dictfmt --index-keep-orig`), and `NAME.dict.dz`, the entries' text
compressed with dictzip (gzip with a random-access field, so `gzip` reads it). Offsets and lengths are byte
counts in the uncompressed text, written in base 64 with the digits `A-Za-z0-9+/`, most significant first.

Headwords starting with "00-database" or "00database" are dictfmt's metadata and are skipped, and so are
other headwords pointing at the same text (gcide indexes its metadata also as "00-gcide-long",
"00-web1913-info", ...). Headwords sharing an offset share one definition, written once; its id is made from
the first of them in index order that has a letter or digit (foldoc indexes "&" before "ampersand"), else
from the first. The index is held as a list; the text is streamed in offset order, forward only, a chunk at
a time.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import Progress

from moe_unlearn.errors import UserError

DICTIONARIES = ("jargon", "foldoc", "devil", "vera", "gcide")
PACKAGES = {name: f"dict-{name}" for name in DICTIONARIES}
DICTD_DIR = Path("/usr/share/dictd")

DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGIT_VALUE = {c: i for i, c in enumerate(DIGITS)}
_METADATA_PREFIXES = ("00-database", "00database")
_CHUNK = 64 * 1024  # bytes read from the dictionary text at a time
_SLUG_LENGTH = 40


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One index line: the headword and the byte range of its definition in the uncompressed text."""

    headword: str
    offset: int
    length: int


def decode_number(text: str) -> int:
    """The value of a dictd index number: base 64, digits `A-Za-z0-9+/`, most significant first ("BA" = 64)."""
    if not text:
        raise ValueError("empty number")
    value = 0
    for c in text:
        digit = _DIGIT_VALUE.get(c)
        if digit is None:
            raise ValueError(f"bad digit {c!r} in number {text!r} (digits are A-Z, a-z, 0-9, + and /)")
        value = value * 64 + digit
    return value


def is_metadata(headword: str) -> bool:
    """Whether a headword is dictfmt's metadata ("00-database-info", "00databaseshort", ...)."""
    return headword.startswith(_METADATA_PREFIXES)


def _read_index(path: Path) -> tuple[list[IndexEntry], int]:
    """(entries in index order without metadata, number of metadata entries skipped); see `read_index`."""
    entries: list[IndexEntry] = []
    metadata_offsets: set[int] = set()
    metadata_lines = 0
    try:
        with Path(path).open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) not in (3, 4):
                    raise UserError(
                        f"{path}:{lineno}: expected headword, offset and length separated by tabs, "
                        f"got {len(fields)} field{'s' if len(fields) != 1 else ''}"
                    )
                try:
                    offset, length = decode_number(fields[1]), decode_number(fields[2])
                except ValueError as e:
                    raise UserError(f"{path}:{lineno}: {e}") from None
                if is_metadata(fields[0]):
                    metadata_offsets.add(offset)
                    metadata_lines += 1
                else:
                    entries.append(IndexEntry(fields[3] if len(fields) == 4 else fields[0], offset, length))
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    kept = [entry for entry in entries if entry.offset not in metadata_offsets]
    return kept, metadata_lines + len(entries) - len(kept)


def read_index(path: Path) -> list[IndexEntry]:
    """The entries of a dictd index in index order, metadata skipped (also headwords at a metadata entry's
    offset); UserError naming the line if malformed."""
    return _read_index(path)[0]


def slug(headword: str) -> str:
    """A readable ASCII form of a headword for ids: lowercase, accents dropped, other runs of non-alphanumerics
    as "-", at most 40 characters ("-" when nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", headword).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return text[:_SLUG_LENGTH].rstrip("-") or "-"


def _open_text(path: Path) -> BinaryIO:
    """The dictionary text for reading: decompressed for .dz (dictzip is gzip), as is otherwise."""
    return gzip.open(path, "rb") if path.suffix == ".dz" else path.open("rb")


def _definitions(f: BinaryIO, entries: list[IndexEntry], path: Path) -> Iterator[tuple[IndexEntry, bytes]]:
    """Yield (entry, its bytes) for entries sorted by offset, reading `f` forward only, `_CHUNK` bytes at a
    time; only the bytes from the current entry's offset on are held (entries may overlap)."""
    buf = bytearray()  # the file's bytes from `start` to the reading position
    start = 0
    for entry in entries:
        if entry.offset >= start + len(buf):
            f.seek(entry.offset)
            buf.clear()
        else:
            del buf[: entry.offset - start]
        start = entry.offset
        while len(buf) < entry.length:
            chunk = f.read(_CHUNK)
            if not chunk:
                raise UserError(
                    f"{path}: text ends at byte {start + len(buf)}, before the end of entry {entry.headword!r} "
                    f"(offset {entry.offset}, length {entry.length})"
                )
            buf += chunk
        yield entry, bytes(buf[: entry.length])


def convert(index_path: Path, dict_path: Path, out_path: Path, name: str, console: Console | None = None) -> dict:
    """Write one dictd dictionary as JSONL, one `{"id", "text"}` line per definition, in offset order.

    The id is f"{name}:{slug(headword)}:{offset}" (of the first headword at that offset with a letter or
    digit, else of the first); the text is the definition decoded as UTF-8 (bad bytes
    replaced), stripped; empty ones are skipped. Written to a temporary file renamed at the end. Returns counts:
    entries (index entries, metadata excluded) = written + duplicates (offset already written) + empty;
    skipped_metadata. A progress bar is shown on `console` (none when None).
    """
    index_path, dict_path, out_path = Path(index_path), Path(dict_path), Path(out_path)
    entries, skipped = _read_index(index_path)
    counts = {"entries": len(entries), "written": 0, "duplicates": 0, "skipped_metadata": skipped, "empty": 0}
    by_offset: dict[int, IndexEntry] = {}
    for entry in entries:  # index order: the first entry at an offset gives the byte range
        kept = by_offset.get(entry.offset)
        if kept is None:
            by_offset[entry.offset] = entry
            continue
        counts["duplicates"] += 1
        if slug(kept.headword) == "-" and slug(entry.headword) != "-":  # "ampersand" names it rather than "&"
            by_offset[entry.offset] = IndexEntry(entry.headword, kept.offset, kept.length)
    unique = sorted(by_offset.values(), key=lambda e: e.offset)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out_path.parent}: cannot create the directory: {e.strerror or e}") from None
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    try:
        with (
            _open_text(dict_path) as f,
            tmp_path.open("w", encoding="utf-8", newline="\n") as out,
            Progress(*Progress.get_default_columns(), console=console, disable=console is None) as progress,
        ):
            task = progress.add_task(f"dictd: {name}", total=len(unique))
            for entry, raw in _definitions(f, unique, dict_path):
                progress.advance(task)
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    counts["empty"] += 1
                    continue
                record = {"id": f"{name}:{slug(entry.headword)}:{entry.offset}", "text": text}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["written"] += 1
        tmp_path.replace(out_path)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError, a truncated stream EOFError
        tmp_path.unlink(missing_ok=True)
        raise UserError(f"{dict_path}: cannot convert to {out_path}: {getattr(e, 'strerror', None) or e}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return counts


def apt_command(packages: Iterable[str]) -> list[str]:
    """The apt-get command that installs `packages` without recommended ones."""
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def install_packages(missing: list[str], run: Callable = subprocess.run) -> None:
    """Install Debian packages with apt-get (`run` is called like subprocess.run); UserError when apt-get is
    missing, when not root, or when the command fails."""
    if not missing:
        return
    command = apt_command(missing)
    shown = " ".join(command)
    if shutil.which("apt-get") is None:
        raise UserError(f"cannot install {', '.join(missing)}: apt-get not found (on Debian or Ubuntu run: {shown})")
    if os.geteuid() != 0:
        raise UserError(f"cannot install {', '.join(missing)}: needs root; run `sudo {shown}` and try again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(command, check=True, env=env)
    except subprocess.CalledProcessError as e:
        raise UserError(
            f"`{shown}` failed with exit code {e.returncode} (if apt cannot find the packages, run "
            "`apt-get update` first)"
        ) from None
    except OSError as e:
        raise UserError(f"`{shown}` could not run: {e.strerror or e}") from None


def dictionary_files(dictd_dir: Path, name: str) -> tuple[Path, Path] | None:
    """(index, text) of a dictionary in `dictd_dir` (text: NAME.dict.dz, else NAME.dict), None if either lacks."""
    index = Path(dictd_dir) / f"{name}.index"
    texts = [Path(dictd_dir) / f"{name}.dict.dz", Path(dictd_dir) / f"{name}.dict"]
    text = next((p for p in texts if p.is_file()), None)
    return (index, text) if index.is_file() and text is not None else None


def prepare(
    out_dir: Path,
    dictd_dir: Path = DICTD_DIR,
    names: Iterable[str] = DICTIONARIES,
    install: bool = True,
    console: Console | None = None,
    run: Callable = subprocess.run,
) -> dict:
    """Convert dictd dictionaries to `out_dir`/NAME.jsonl, first installing the packages of missing ones
    (when `install`, with `run` as subprocess.run); returns {name: counts} (see `convert`).

    UserError names the dictionaries whose files are still missing, or that have no known package.
    """
    names = list(dict.fromkeys(names))
    missing = [name for name in names if dictionary_files(dictd_dir, name) is None]
    if missing and install:
        unknown = [name for name in missing if name not in PACKAGES]
        if unknown:
            raise UserError(
                f"no dictd files for {', '.join(unknown)} in {dictd_dir} and no package known for them "
                f"(known: {', '.join(DICTIONARIES)})"
            )
        install_packages([PACKAGES[name] for name in missing], run=run)
        missing = [name for name in missing if dictionary_files(dictd_dir, name) is None]
    if missing:
        packages = " ".join(PACKAGES.get(name, f"dict-{name}") for name in missing)
        hint = "" if install else f" (to install them: apt-get install {packages})"
        raise UserError(
            f"dictd files missing for {', '.join(missing)}: expected NAME.index and NAME.dict.dz in {dictd_dir}{hint}"
        )
    out_dir = Path(out_dir)
    results = {}
    for name in names:
        index, text = dictionary_files(dictd_dir, name)
        results[name] = convert(index, text, out_dir / f"{name}.jsonl", name, console=console)
    return results
