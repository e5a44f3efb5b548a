"""Tests of moe_unlearn.data.ingest: round trips, one test per bad input, laziness and streaming."""

import io
import json
import re
import tracemalloc
from pathlib import Path

import pytest
from rich.console import Console

from moe_unlearn.data.ingest import SUPPORTED_SUFFIXES, progress_bar, read_files, read_records
from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError


def write(path: Path, content: str | bytes) -> Path:
    """Write `content` (bytes as is, str as UTF-8 without newline translation) and return `path`."""
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(path: Path, *rows: object) -> Path:
    """Write one JSON value per line (a str row is written verbatim)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    return write(path, "".join(line + "\n" for line in lines))


def expect_error(records, pattern: str) -> str:
    """Exhaust `records`, assert a one-line UserError matching `pattern` (a regex), return its message."""
    with pytest.raises(UserError, match=pattern) as info:
        list(records)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- round trips -------------------------------------------------------------------------------------------


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == (".txt", ".jsonl")


def test_txt_round_trip(tmp_path):
    path = write(
        tmp_path / "notes.txt",
        "\n  \nfirst line  \n  second line\n\n\n \t \nsecond record\n\nthird\r\nrecord\r\n\r\n\r\nlast",
    )
    assert list(read_records(path, "books")) == [
        Record("notes:3", "books", "first line  \n  second line"),
        Record("notes:8", "books", "second record"),
        Record("notes:10", "books", "third\nrecord"),
        Record("notes:14", "books", "last"),
    ]


def test_txt_bom_is_skipped_and_whitespace_stripped(tmp_path):
    path = write(tmp_path / "b.txt", b"\xef\xbb\xbf  hello \nworld\t\n")
    assert list(read_records(path, "s")) == [Record("b:1", "s", "hello \nworld")]


def test_txt_empty_file_has_no_records(tmp_path):
    assert list(read_records(write(tmp_path / "e.txt", "\n \n\r\n"), "s")) == []


def test_jsonl_round_trip(tmp_path):
    path = write(
        tmp_path / "data.jsonl",
        '\ufeff{"id": 7, "text": "seven"}\r\n'
        "\n"
        '{"id": "a-1", "text": "  spaced\\ntext ", "source": "web", "extra": [1, 2]}\n'
        "   \n"
        '{"text": "no trailing newline", "id": 0}',
    )
    assert list(read_records(path, "web")) == [
        Record("7", "web", "seven"),
        Record("a-1", "web", "  spaced\ntext "),
        Record("0", "web", "no trailing newline"),
    ]


def test_jsonl_other_field_names(tmp_path):
    path = jsonl(tmp_path / "f.jsonl", {"key": 1, "body": "one", "id": "ignored", "text": 5})
    records = list(read_records(path, "s", id_field="key", text_field="body"))
    assert records == [Record("1", "s", "one")]
    assert list(read_files([path], "s", id_field="key", text_field="body")) == records


def test_read_files_in_order(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"id": "x", "text": "X"}, {"id": "y", "text": "Y"})
    b = write(tmp_path / "b.txt", "one\n\ntwo\n")
    assert [r.id for r in read_files([b, a], "s")] == ["b:1", "b:3", "x", "y"]
    assert [r.id for r in read_files(iter([a]), "s")] == ["x", "y"]
    assert list(read_files([], "s")) == []


# --- bad files -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    expect_error(read_records(tmp_path / "nope.txt", "s"), r"nope\.txt: no such file")
    expect_error(read_files([tmp_path / "nope.jsonl"], "s"), r"nope\.jsonl: no such file")


def test_directory(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    expect_error(read_records(tmp_path / "dir.txt", "s"), r"dir\.txt: is a directory")


def test_unknown_suffix(tmp_path):
    message = expect_error(read_records(write(tmp_path / "d.csv", "a,b\n"), "s"), r"d\.csv: ")
    assert ".csv" in message and ".txt" in message and ".jsonl" in message
    expect_error(read_records(write(tmp_path / "noext", "x\n"), "s"), r"noext: .*\.txt, \.jsonl")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_invalid_utf8(tmp_path, suffix):
    good = '{"id": 1, "text": "ok"}\n' if suffix == ".jsonl" else "ok\n"
    path = write(tmp_path / f"bad{suffix}", good.encode() + b"\n" + b"caf\xe9 \xff\n" + good.encode())
    expect_error(read_records(path, "s"), rf"bad{re.escape(suffix)}:3: not valid UTF-8 \(byte 4 ")


def test_invalid_utf8_after_bom_on_first_line(tmp_path):
    path = write(tmp_path / "bad.txt", b"\xef\xbb\xbfab\x80\n")
    expect_error(read_records(path, "s"), r"bad\.txt:1: not valid UTF-8 \(byte 6 ")


def test_invalid_json(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, "", '{"id": 2, "text": ')
    expect_error(read_records(path, "s"), r"bad\.jsonl:3: invalid JSON")


@pytest.mark.parametrize(("row", "kind"), [([1, 2], "list"), ('"text"', "str"), ("3", "int"), ("null", "NoneType")])
def test_jsonl_line_not_an_object(tmp_path, row, kind):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, row)
    expect_error(read_records(path, "s"), rf"bad\.jsonl:2: expected a JSON object, got {kind}")


def test_missing_text(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": 2, "body": "b"})
    expect_error(read_records(path, "s"), r"bad\.jsonl:2: missing field 'text'")
    expect_error(read_records(path, "s", text_field="body"), r"bad\.jsonl:1: missing field 'body'")


@pytest.mark.parametrize("text", [3, None, ["a"], {"t": "a"}])
def test_non_string_text(tmp_path, text):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": 2, "text": text})
    expect_error(read_records(path, "s"), r"bad\.jsonl:2: field 'text' must be a string")


def test_missing_id(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, "", {"text": "b"})
    expect_error(read_records(path, "s"), r"bad\.jsonl:3: missing field 'id'")


@pytest.mark.parametrize("rid", [1.5, True, None, ["x"], {"a": 1}])
def test_bad_id_type(tmp_path, rid):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": rid, "text": "b"})
    expect_error(read_records(path, "s"), r"bad\.jsonl:2: field 'id' must be a string or an integer")


@pytest.mark.parametrize("rid", ["", "  "])
def test_empty_id(tmp_path, rid):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": rid, "text": "b"})
    expect_error(read_records(path, "s"), r"bad\.jsonl:2: empty id")


def test_source_disagrees(tmp_path):
    path = jsonl(
        tmp_path / "bad.jsonl",
        {"id": 1, "text": "a", "source": "web"},
        {"id": 2, "text": "b", "source": "mail"},
    )
    message = expect_error(read_records(path, "web"), r"bad\.jsonl:2: ")
    assert "'mail'" in message and "'web'" in message


@pytest.mark.parametrize("text", ["", " \t\n "])
def test_empty_text(tmp_path, text):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": 2, "text": text})
    expect_error(read_records(path, "s"), r"bad\.jsonl:2: empty text")


def test_duplicate_id_within_file(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": "x", "text": "b"}, "", {"id": "1", "text": "c"})
    expect_error(read_records(path, "s"), r"bad\.jsonl:4: duplicate id '1' \(first at line 1\)")
    expect_error(read_files([path], "s"), r"bad\.jsonl:4: duplicate id '1' \(first at line 1\)")


def test_duplicate_id_across_files(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"id": "x", "text": "a"}, {"id": "shared", "text": "b"})
    b = jsonl(tmp_path / "b.jsonl", {"id": "y", "text": "c"}, {"id": "shared", "text": "d"})
    message = expect_error(read_files([a, b], "s"), r"b\.jsonl:2: id 'shared' already used at ")
    assert message.endswith(f"{a}:2")


def test_duplicate_txt_stem_across_directories(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    a = write(tmp_path / "d1" / "notes.txt", "\n\nthree\n")
    b = write(tmp_path / "d2" / "notes.txt", "one\n\nthree\n")
    records = read_files([a, b], "s")
    assert [next(records).id, next(records).id] == ["notes:3", "notes:1"]
    message = expect_error(records, r"d2/notes\.txt:3: id 'notes:3' already used at ")
    assert message == f"{b}:3: id 'notes:3' already used at {a}:3"


def test_same_path_twice(tmp_path, monkeypatch):
    a = jsonl(tmp_path / "a.jsonl", {"id": "x", "text": "a"})
    b = jsonl(tmp_path / "b.jsonl", {"id": "y", "text": "b"})
    monkeypatch.chdir(tmp_path)
    records = read_files([a, b, Path("a.jsonl")], "s")
    expect_error(records, r"^a\.jsonl: file given twice")


def test_read_files_checks_all_paths_before_yielding(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"id": "x", "text": "a"})
    records = read_files([a, tmp_path / "missing.txt"], "s")
    with pytest.raises(UserError, match=r"missing\.txt: no such file"):
        next(records)


# --- laziness and streaming ------------------------------------------------------------------------------


def test_read_records_is_lazy(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", {"id": 1, "text": "a"}, {"id": 2, "text": "b"}, "{oops")
    records = read_records(path, "s")
    assert next(records) == Record("1", "s", "a")
    assert next(records) == Record("2", "s", "b")
    expect_error(records, r"bad\.jsonl:3: invalid JSON")


def test_read_records_is_lazy_for_txt(tmp_path):
    path = write(tmp_path / "bad.txt", b"first\n\nsecond\n\nthird \xc3\x28\n")
    records = read_records(path, "s")
    assert [next(records).id, next(records).id] == ["bad:1", "bad:3"]
    expect_error(records, r"bad\.txt:5: not valid UTF-8")


def test_read_files_is_lazy(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"id": 1, "text": "a"})
    b = jsonl(tmp_path / "b.jsonl", {"id": 2, "text": "b"}, "[]")
    records = read_files([a, b], "s")
    assert [next(records).id, next(records).id] == ["1", "2"]
    expect_error(records, r"b\.jsonl:2: expected a JSON object")


def test_read_records_streams_large_file(tmp_path):
    path = tmp_path / "big.txt"
    paragraph = ("lorem ipsum dolor sit amet " * 4 + "\n") * 3 + "\n"
    count = 5 * 1024 * 1024 // len(paragraph) + 1
    with path.open("w", encoding="utf-8") as f:
        for _ in range(count):
            f.write(paragraph)
    assert path.stat().st_size > 5 * 1024 * 1024

    tracemalloc.start()
    try:
        n = sum(1 for _ in read_records(path, "s"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == count
    assert peak < 2 * 1024 * 1024


# --- at scale: a memory cap, the progress bar, the command --------------------------------------------------

# Run in a subprocess under RLIMIT_AS. The package's __init__ imports torch (seconds, hundreds of MiB of address
# space), so only the modules under test are loaded: the reader and the registry, as Run.ingest uses them.
CAPPED_INGEST = """
import json, resource, sys, types
from pathlib import Path

package = types.ModuleType("moe_unlearn")
package.__path__ = [sys.argv[1]]
sys.modules["moe_unlearn"] = package
from moe_unlearn.data.ingest import read_files
from moe_unlearn.storage.registry import Registry

registry = Registry(Path(sys.argv[2]))
with registry.transaction():
    registry.add_source("big", "big")
vm_size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
cap = vm_size + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
files = [Path(p) for p in sys.argv[4:]]
with registry.transaction():
    added = registry.insert_records(read_files(files, "big", id_field="key", text_field="body"))
try:  # the cap is real: reading one of the files whole does not fit under it
    files[0].read_bytes()
    whole = True
except MemoryError:
    whole = False
stored = registry.db.execute("SELECT COUNT(*), SUM(LENGTH(text)) FROM records").fetchone()
print(json.dumps({"added": added, "whole_read_fits": whole, "stored": stored}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the address space size")
def test_ingest_streams_files_larger_than_a_memory_cap(tmp_path):
    """A 48 MiB .jsonl (other field names) and a 48 MiB .txt go into the registry under an address-space cap
    of 24 MiB more than the process had before: they are streamed, never read whole."""
    import subprocess
    import sys

    import moe_unlearn

    headroom, size = 24 * 2**20, 48 * 2**20
    body = "all work and no play makes jack a dull boy " * 400  # 17.6 kB
    jsonl_path, txt_path = tmp_path / "big.jsonl", tmp_path / "big.txt"
    count = size // len(body) + 1
    with jsonl_path.open("w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"key": i, "body": body, "id": "unused"}) + "\n")
    with txt_path.open("w", encoding="utf-8") as f:
        for _ in range(count):
            f.write(body + "\n" + body[:100] + "\n\n")
    assert min(jsonl_path.stat().st_size, txt_path.stat().st_size) > size >= 2 * headroom

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CAPPED_INGEST,
            str(Path(moe_unlearn.__file__).parent),
            str(tmp_path / "registry.db"),
            str(headroom),
            str(jsonl_path),
            str(txt_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["added"] == 2 * count
    assert result["whole_read_fits"] is False
    assert result["stored"] == [2 * count, count * len(body) + count * (len(body) + 1 + 100)]


def test_progress_bar_counts_the_bytes_read(tmp_path, monkeypatch):
    monkeypatch.setattr("moe_unlearn.data.ingest._PROGRESS_STEP", 4096)
    a = jsonl(tmp_path / "a.jsonl", *({"id": i, "text": "x" * 1000} for i in range(50)))
    b = write(tmp_path / "b [1].txt", "one\n\ntwo\n")  # "[1]" is not rich markup
    total = a.stat().st_size + b.stat().st_size
    console = Console(file=io.StringIO(), force_terminal=False, width=120)
    with progress_bar(console) as progress:
        records = read_files([a, b], "s", progress=progress)
        next(records)
        (task,) = progress.tasks
        assert task.total == total and task.completed < a.stat().st_size
        assert [r.id for r in records][-2:] == ["b [1]:1", "b [1]:3"]
        assert task.completed == total and task.description == "ingest s: b [1].txt"
    assert console.file.getvalue().strip() == ""  # transient: nothing left behind in a log
    assert len(list(read_files([a], "s"))) == 50  # without a bar: same records


def test_progress_bar_shows_nothing_without_console(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"id": 1, "text": "x"})
    with progress_bar(None) as progress:
        assert [r.id for r in read_files([a], "s", progress=progress)] == ["1"]
        assert progress.disable


def test_ingest_command_fields_progress_and_errors(tmp_path):
    """`moe-unlearn ingest` with --id-field/--text-field; a bad line: one line naming FILE:LINE, exit 2,
    nothing added."""
    from typer.testing import CliRunner

    from moe_unlearn import Run, cli
    from moe_unlearn.storage.registry import Registry

    run_dir = tmp_path / "run"
    Run(run_dir).init(overrides=["data.builtin=false"])
    good = jsonl(
        tmp_path / "good.jsonl",
        {"url": "https://a.example/1", "content": "first page", "text": 3},
        {"url": 2, "content": "second page"},
    )
    runner = CliRunner()
    args = ["ingest", "--source", "web", "--id-field", "url", "--text-field", "content", "--run-dir", str(run_dir)]
    done = runner.invoke(cli.app, [*args, str(good), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output[done.output.index("{") :])["records_added"] == 2
    assert "ingest web" not in done.output  # the progress bar is transient: no leftovers in logs
    registry = Registry(run_dir / "registry.db")
    assert [(r.id, r.text) for r in registry.records(["web"])] == [
        ("2", "second page"),
        ("https://a.example/1", "first page"),
    ]

    bad = jsonl(tmp_path / "bad.jsonl", {"url": "b1", "content": "fine"}, "", {"url": "b2", "text": "wrong field"})
    done = runner.invoke(cli.app, [*args, str(bad)])
    assert done.exit_code == 2
    (line,) = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert line == f"error: {bad}:3: missing field 'content'"
    assert "Traceback" not in done.output
    assert len(registry.records(["web"])) == 2  # all or nothing
    registry.close()


def test_ingesting_a_file_without_records_is_an_error(tmp_path):
    good = write(tmp_path / "good.jsonl", '{"id": "a", "text": "alpha"}\n')
    for empty in (write(tmp_path / "empty.jsonl", ""), write(tmp_path / "blank.txt", "\n  \n")):
        expect_error(read_files([good, empty], "s"), rf"{empty.name}: no records in the file \(it is empty or blank\)")
