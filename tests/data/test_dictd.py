"""Tests of moe_unlearn.data.dictd on small dictd dictionaries built here (no apt, no /usr/share/dictd)."""

import gzip
import io
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from moe_unlearn.data.dictd import (
    DICTIONARIES,
    PACKAGES,
    IndexEntry,
    convert,
    decode_number,
    install_packages,
    prepare,
    read_index,
    slug,
)
from moe_unlearn.errors import UserError

DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def encode_number(n: int) -> str:
    """dictd's base 64, written independently of the module: most significant digit first, 0 is "A"."""
    digits = ""
    while True:
        n, digit = divmod(n, 64)
        digits = DIGITS[digit] + digits
        if n == 0:
            return digits


def write_dictd(directory: Path, name: str, texts: list[str], index: list[tuple[str, int]]) -> tuple[Path, Path]:
    """Write NAME.dict.dz holding `texts` one after the other, and NAME.index with one line per (headword,
    number of the text it points at), in the given order; return (index path, dict path)."""
    blobs = [text.encode("utf-8") for text in texts]
    offsets = [0, *itertools.accumulate(len(b) for b in blobs)]
    index_path, dict_path = directory / f"{name}.index", directory / f"{name}.dict.dz"
    with gzip.open(dict_path, "wb", compresslevel=1) as f:
        f.write(b"".join(blobs))
    lines = [f"{hw}\t{encode_number(offsets[i])}\t{encode_number(len(blobs[i]))}\n" for hw, i in index]
    index_path.write_text("".join(lines), encoding="utf-8")
    return index_path, dict_path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expect_error(pattern: str, fn, *args, **kwargs) -> str:
    """Call fn, assert a one-line UserError matching `pattern` (a regex), return its message."""
    with pytest.raises(UserError, match=pattern) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


TEXTS = [
    "00-database-info\n  Converted by dictfmt.\n",  # 0
    "Banana\n\n   A long yellow fruit.\n\n",  # 1
    "apple\n\n   A red or green fruit.\n",  # 2
    "Café\n\n   A place for coffee — naïve ☕.\n",  # 3
    "  \n\n\t\n",  # 4: empty
    "C++\n\n   A language.\n",  # 5
]
INDEX = [  # in index (not offset) order
    ("00-database-info", 0),
    ("00databaseshort", 0),
    ("a banana", 1),  # first in index order of the two headwords of text 1: kept
    ("apple", 2),
    ("Banana", 1),  # duplicate offset
    ("blank", 4),
    ("C++", 5),
    ("Café", 3),
]


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    return write_dictd(tmp_path, "test", TEXTS, INDEX)


def offset_of(i: int) -> int:
    return sum(len(t.encode("utf-8")) for t in TEXTS[:i])


# --- numbers -------------------------------------------------------------------------------------------------


def test_decode_known_values():
    assert decode_number("A") == 0
    assert decode_number("B") == 1
    assert decode_number("/") == 63
    assert decode_number("+") == 62
    assert decode_number("BA") == 64
    assert decode_number("Bm") == 64 + 38
    assert decode_number("AAB") == 1


def test_decode_round_trip():
    for n in [0, 1, 25, 26, 51, 52, 61, 62, 63, 64, 65, 4095, 4096, 123_456_789, 2**40 + 3]:
        assert decode_number(encode_number(n)) == n
    assert encode_number(64) == "BA"


@pytest.mark.parametrize("text", ["A=B", "-", "12 ", "é", "=="])
def test_decode_bad_digit(text):
    with pytest.raises(ValueError, match="bad digit"):
        decode_number(text)


def test_decode_empty():
    with pytest.raises(ValueError, match="empty"):
        decode_number("")


def test_slug():
    assert slug("Hello, World!") == "hello-world"
    assert slug("Café") == "cafe"
    assert slug("C++") == "c"
    assert slug("!!!") == "-"
    long = slug("a" * 30 + " " + "b" * 30)
    assert len(long) <= 40 and long.startswith("a" * 30 + "-b") and not long.endswith("-")
    assert slug("x" * 39 + " y") == "x" * 39  # no trailing "-" after truncation


# --- index ---------------------------------------------------------------------------------------------------


def test_read_index(sample):
    index_path, _ = sample
    entries = read_index(index_path)
    assert [e.headword for e in entries] == ["a banana", "apple", "Banana", "blank", "C++", "Café"]
    assert entries[1] == IndexEntry("apple", offset_of(2), len(TEXTS[2].encode()))


def test_read_index_blank_lines_crlf_and_original_headword(tmp_path):
    path = tmp_path / "x.index"
    path.write_bytes(b"00-database-url\tA\tB\r\n\nfoo\tBA\tC\r\nfoo bar\tB\tD\tFoo Bar\n")
    assert read_index(path) == [IndexEntry("foo", 64, 2), IndexEntry("Foo Bar", 1, 3)]


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("broken line without tabs", r"x\.index:2: expected headword, offset and length .* got 1 field$"),
        ("a\tB", r"x\.index:2: .*got 2 fields"),
        ("a\tB\tC\tD\tE", r"x\.index:2: .*got 5 fields"),
        ("a\tB*\tC", r"x\.index:2: bad digit '\*'"),
        ("a\tB\t", r"x\.index:2: empty number"),
    ],
)
def test_read_index_malformed_line(tmp_path, line, pattern):
    path = tmp_path / "x.index"
    path.write_text(f"ok\tA\tB\n{line}\nok2\tB\tB\n", encoding="utf-8")
    expect_error(pattern, read_index, path)


def test_read_index_missing_file(tmp_path):
    expect_error(r"nope\.index: cannot read", read_index, tmp_path / "nope.index")


# --- conversion ----------------------------------------------------------------------------------------------


def test_convert(sample, tmp_path):
    index_path, dict_path = sample
    out = tmp_path / "out" / "test.jsonl"
    counts = convert(index_path, dict_path, out, "test")
    assert counts == {"entries": 6, "written": 4, "duplicates": 1, "skipped_metadata": 2, "empty": 1}
    records = read_jsonl(out)
    assert records == [  # offset order
        {"id": f"test:a-banana:{offset_of(1)}", "text": "Banana\n\n   A long yellow fruit."},
        {"id": f"test:apple:{offset_of(2)}", "text": "apple\n\n   A red or green fruit."},
        {"id": f"test:cafe:{offset_of(3)}", "text": "Café\n\n   A place for coffee — naïve ☕."},
        {"id": f"test:c:{offset_of(5)}", "text": "C++\n\n   A language."},
    ]
    assert "naïve ☕" in out.read_text(encoding="utf-8")  # written as UTF-8, not escaped
    assert not list(out.parent.glob("*.tmp"))


def test_convert_bad_utf8_is_replaced(tmp_path):
    index_path = tmp_path / "b.index"
    dict_path = tmp_path / "b.dict.dz"
    with gzip.open(dict_path, "wb") as f:
        f.write(b"bad \xff byte")
    index_path.write_text("bad\tA\tK\n", encoding="utf-8")
    convert(index_path, dict_path, tmp_path / "b.jsonl", "b")
    assert read_jsonl(tmp_path / "b.jsonl") == [{"id": "b:bad:0", "text": "bad \ufffd byte"}]


def test_convert_overlapping_entries(tmp_path):
    texts = ["alpha beta gamma\n", "delta\n"]
    index_path, dict_path = write_dictd(tmp_path, "o", texts, [("alpha", 0), ("delta", 1)])
    index_path.write_text(index_path.read_text() + f"beta\t{encode_number(6)}\t{encode_number(4)}\n")
    convert(index_path, dict_path, tmp_path / "o.jsonl", "o")
    assert [r["text"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["alpha beta gamma", "beta", "delta"]


def test_convert_skips_other_headwords_of_metadata(tmp_path):
    """gcide indexes its metadata also as "00-gcide-long", "00-web1913-info", ...: at 00-database offsets."""
    texts = ["00-database-short\n   GCIDE\n", "00-database-info\n   About.\n", "word\n   A word.\n"]
    index = [
        ("00-web1913-info", 1),  # before the metadata line it shares an offset with
        ("00-database-info", 1),
        ("00-database-short", 0),
        ("00-gcide-short", 0),
        ("word", 2),
        ("00-real-headword", 2),  # not metadata: its text is a definition
    ]
    index_path, dict_path = write_dictd(tmp_path, "g", texts, index)
    assert [e.headword for e in read_index(index_path)] == ["word", "00-real-headword"]
    counts = convert(index_path, dict_path, tmp_path / "g.jsonl", "g")
    assert counts == {"entries": 2, "written": 1, "duplicates": 1, "skipped_metadata": 4, "empty": 0}
    offset = len(texts[0]) + len(texts[1])
    assert read_jsonl(tmp_path / "g.jsonl") == [{"id": f"g:word:{offset}", "text": "word\n   A word."}]


def test_convert_id_prefers_a_headword_with_letters(tmp_path):
    """foldoc indexes "&" before "ampersand": the id names the entry by the first headword with a letter or
    digit; the byte range stays the first entry's; a symbol-only entry keeps "-"."""
    texts = ["ampersand\n&\n   The character.\n", "~\n   Tilde.\n", "hash\n#\n   The sign.\n"]
    index_path, dict_path = write_dictd(
        tmp_path, "f", texts, [("#", 2), ("&", 0), ("amper", 0), ("ampersand", 0), ("hash", 2), ("~", 1)]
    )
    counts = convert(index_path, dict_path, tmp_path / "f.jsonl", "f")
    assert counts["written"] == 3 and counts["duplicates"] == 3
    ids = [r["id"] for r in read_jsonl(tmp_path / "f.jsonl")]
    assert ids == ["f:amper:0", f"f:-:{len(texts[0])}", f"f:hash:{len(texts[0]) + len(texts[1])}"]


def test_convert_entry_past_the_end(sample, tmp_path):
    index_path, dict_path = sample
    end = sum(len(t.encode()) for t in TEXTS)
    index_path.write_text(index_path.read_text() + f"zz\t{encode_number(end - 2)}\tK\n", encoding="utf-8")
    out = tmp_path / "t.jsonl"
    expect_error(r"test\.dict\.dz: text ends at byte \d+, before the end of entry 'zz'", convert, *sample, out, "t")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_convert_not_gzip(sample, tmp_path):
    index_path, dict_path = sample
    dict_path.write_bytes(b"this is not gzip data at all" * 10)
    out = tmp_path / "t.jsonl"
    expect_error(r"test\.dict\.dz: cannot convert", convert, index_path, dict_path, out, "t")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_convert_with_progress_bar(sample, tmp_path):
    console = Console(file=io.StringIO(), force_terminal=False, width=100)
    counts = convert(*sample, tmp_path / "p.jsonl", "test", console=console)
    assert counts["written"] == 4
    assert "dictd: test" in console.file.getvalue()


class NoWholeReads:
    """A file whose read() refuses to read everything or more than 1 MiB at once."""

    def __init__(self, f):
        self.f = f
        self.reads = 0

    def read(self, size=-1):
        assert size is not None and 0 <= size <= 2**20, f"read({size}) on the dictionary text"
        self.reads += 1
        return self.f.read(size)

    def seek(self, *args):
        return self.f.seek(*args)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_convert_streams_the_text(tmp_path, monkeypatch):
    big = "huge\n\n" + "0123456789abcdef" * (96 * 1024) + "\n"  # 1.5 MiB in one entry
    texts = [f"word{i}\n\n   " + f"definition {i} " * 20 + "\n" for i in range(10_000)] + [big]
    index = [(f"word{i}", i) for i in range(10_000)] + [("huge", 10_000)]
    index_path, dict_path = write_dictd(tmp_path, "s", texts, index[::-1])
    assert sum(len(t) for t in texts) > 4 * 2**20
    opened = []
    real_open = gzip.open

    def fake_open(*args, **kwargs):
        opened.append(NoWholeReads(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(gzip, "open", fake_open)
    counts = convert(index_path, dict_path, tmp_path / "s.jsonl", "s")
    assert counts["written"] == 10_001 and len(opened) == 1 and opened[0].reads > 4
    records = read_jsonl(tmp_path / "s.jsonl")
    assert records[0] == {"id": "s:word0:0", "text": texts[0].strip()}
    assert records[-1]["text"] == big.strip()
    assert [r["id"].split(":")[1] for r in records[:3]] == ["word0", "word1", "word2"]


# --- installing ----------------------------------------------------------------------------------------------


class FakeRun:
    """Records subprocess.run calls; optionally fails or runs an action instead of apt-get."""

    def __init__(self, returncode: int = 0, action=None):
        self.calls: list[tuple[list[str], dict]] = []
        self.returncode, self.action = returncode, action

    def __call__(self, args, **kwargs):
        self.calls.append((args, kwargs))
        if self.returncode:
            raise subprocess.CalledProcessError(self.returncode, args)
        if self.action:
            self.action()
        return subprocess.CompletedProcess(args, 0)


@pytest.fixture
def apt(monkeypatch):
    """apt-get present and running as root, unless a test changes it."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    return monkeypatch


def test_packages():
    assert DICTIONARIES == ("jargon", "foldoc", "devil", "vera", "gcide")
    assert {name: f"dict-{name}" for name in DICTIONARIES} == PACKAGES


def test_install_as_root(apt):
    run = FakeRun()
    install_packages(["dict-jargon", "dict-devil"], run=run)
    [(args, kwargs)] = run.calls
    assert args == ["apt-get", "install", "-y", "--no-install-recommends", "dict-jargon", "dict-devil"]
    assert kwargs["check"] is True


def test_install_nothing(apt):
    run = FakeRun()
    install_packages([], run=run)
    assert run.calls == []


def test_install_not_root(apt):
    apt.setattr(os, "geteuid", lambda: 1000, raising=False)
    run = FakeRun()
    message = expect_error(r"cannot install dict-jargon: needs root", install_packages, ["dict-jargon"], run=run)
    assert "sudo apt-get install -y --no-install-recommends dict-jargon" in message
    assert run.calls == []


def test_install_without_apt(apt):
    apt.setattr(shutil, "which", lambda name: None)
    run = FakeRun()
    expect_error(r"cannot install dict-vera: apt-get not found", install_packages, ["dict-vera"], run=run)
    assert run.calls == []


def test_install_fails(apt):
    expect_error(r"failed with exit code 100", install_packages, ["dict-vera"], run=FakeRun(returncode=100))


# --- prepare -------------------------------------------------------------------------------------------------


DEVIL = [
    "00-database-short\n  The Devil's Dictionary\n",
    "ABSURDITY, n.\n  A statement.\n",
    "ACADEME, n.\n  School.\n",
]


def two_dictionaries(directory: Path) -> None:
    write_dictd(directory, "jargon", TEXTS, INDEX)
    write_dictd(directory, "devil", DEVIL, [("00-database-short", 0), ("ACADEME", 2), ("ABSURDITY", 1)])


def test_prepare_converts_each(tmp_path, apt):
    dictd_dir, out = tmp_path / "dictd", tmp_path / "out"
    dictd_dir.mkdir()
    two_dictionaries(dictd_dir)
    run = FakeRun()
    results = prepare(out, dictd_dir=dictd_dir, names=("jargon", "devil"), run=run)
    assert run.calls == []  # nothing missing, nothing installed
    assert results["jargon"]["written"] == 4
    assert results["devil"] == {"entries": 2, "written": 2, "duplicates": 0, "skipped_metadata": 1, "empty": 0}
    assert sorted(p.name for p in out.iterdir()) == ["devil.jsonl", "jargon.jsonl"]
    absurdity, academe = len(DEVIL[0]), len(DEVIL[0]) + len(DEVIL[1])
    assert read_jsonl(out / "devil.jsonl") == [
        {"id": f"devil:absurdity:{absurdity}", "text": "ABSURDITY, n.\n  A statement."},
        {"id": f"devil:academe:{academe}", "text": "ACADEME, n.\n  School."},
    ]
    assert read_jsonl(out / "jargon.jsonl")[0]["id"].startswith("jargon:a-banana:")


def test_prepare_missing_without_install(tmp_path, apt):
    write_dictd(tmp_path, "jargon", TEXTS, INDEX)
    run = FakeRun()
    message = expect_error(
        r"dictd files missing for devil: .*apt-get install dict-devil",
        prepare,
        tmp_path / "out",
        dictd_dir=tmp_path,
        names=("jargon", "devil"),
        install=False,
        run=run,
    )
    assert "jargon" not in message.split(":")[0]
    assert run.calls == [] and not (tmp_path / "out").exists()


def test_prepare_installs_missing(tmp_path, apt):
    dictd_dir = tmp_path / "dictd"
    dictd_dir.mkdir()
    run = FakeRun(action=lambda: two_dictionaries(dictd_dir))
    results = prepare(tmp_path / "out", dictd_dir=dictd_dir, names=("jargon", "devil"), run=run)
    [(args, _)] = run.calls
    assert args == ["apt-get", "install", "-y", "--no-install-recommends", "dict-jargon", "dict-devil"]
    assert set(results) == {"jargon", "devil"}


def test_prepare_still_missing_after_install(tmp_path, apt):
    run = FakeRun()
    expect_error(
        r"dictd files missing for vera", prepare, tmp_path / "out", dictd_dir=tmp_path, names=["vera"], run=run
    )
    assert len(run.calls) == 1


def test_prepare_refuses_clearly_when_not_root(tmp_path, apt):
    apt.setattr(os, "geteuid", lambda: 1000, raising=False)
    expect_error(
        r"cannot install dict-gcide: needs root", prepare, tmp_path / "out", dictd_dir=tmp_path, names=["gcide"]
    )


def test_prepare_unknown_name(tmp_path, apt):
    expect_error(
        r"no dictd files for wordnet .*no package known", prepare, tmp_path, dictd_dir=tmp_path, names=["wordnet"]
    )


def test_prepare_uncompressed_dict(tmp_path):
    index_path, dict_path = write_dictd(tmp_path, "vera", ["ABC\n  Alphabet.\n"], [("ABC", 0)])
    with gzip.open(dict_path, "rb") as f:
        (tmp_path / "vera.dict").write_bytes(f.read())
    dict_path.unlink()
    results = prepare(tmp_path / "out", dictd_dir=tmp_path, names=["vera"], install=False)
    assert results == {"vera": {"entries": 1, "written": 1, "duplicates": 0, "skipped_metadata": 0, "empty": 0}}
    assert read_jsonl(tmp_path / "out" / "vera.jsonl") == [{"id": "vera:abc:0", "text": "ABC\n  Alphabet."}]


def test_data_prepare_command_converts_and_reports_errors_in_one_line(tmp_path):
    """`moe-unlearn data prepare dictd`: the counts per dictionary; a bad corpus or missing files exit 2."""
    from typer.testing import CliRunner

    from moe_unlearn import cli

    source = tmp_path / "dictd"
    source.mkdir()
    for name in DICTIONARIES:
        write_dictd(source, name, [f"{name} entry text.\n"], [("word", 0)])
    args = ["data", "prepare", "dictd", "--out", str(tmp_path / "out"), "--dictd-dir", str(source), "--no-install"]
    runner = CliRunner()
    done = runner.invoke(cli.app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output[done.output.index("{") :])  # after the progress bars (stderr)
    assert result["jargon"]["written"] == 1 and (tmp_path / "out" / "gcide.jsonl").exists()
    (source / "vera.index").unlink()
    done = runner.invoke(cli.app, args)
    assert done.exit_code == 2 and "vera" in done.output
    done = runner.invoke(cli.app, ["data", "prepare", "wiki", "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and "unknown corpus 'wiki'" in done.output
