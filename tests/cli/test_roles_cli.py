"""`ingest --role` and what `registry` and `drop` make of a base source, as a user runs them."""

import json

import pytest

from tests.conftest import cli


@pytest.fixture
def run_dir(tmp_path):
    """A run directory without the built-in corpus, with one base source and one expert source."""
    run_dir = tmp_path / "run"
    assert cli("init", "--run-dir", run_dir, "data.builtin=false").returncode == 0
    (tmp_path / "gutenberg.txt").write_text("Call me Ishmael.\n\nIt was the best of times.\n")
    (tmp_path / "mail.txt").write_text("lunch at noon?\n")
    base = cli("ingest", "--source", "gutenberg", "--role", "base", tmp_path / "gutenberg.txt", "--run-dir", run_dir)
    assert base.returncode == 0, base.stderr
    assert "added 2 records to base source 'gutenberg'" in base.stdout
    assert cli("ingest", "--source", "mail", tmp_path / "mail.txt", "--run-dir", run_dir).returncode == 0
    return run_dir


def test_ingest_help_explains_the_roles():
    result = cli("ingest", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # the help box wraps lines
    assert "--role" in text and "[expert|base]" in text
    assert "never forgotten" in text and "shared base model" in text and "rebuilds every expert" in text


def test_registry_shows_each_sources_role(run_dir):
    info = json.loads(cli("registry", "--run-dir", run_dir, "--json").stdout)
    assert [(s["name"], s["expert"], s["role"]) for s in info["sources"]] == [
        ("gutenberg", "base", "base"),
        ("mail", "mail", "expert"),
    ]
    assert info["experts"] == ["mail"]  # the base is no expert and no router stage
    table = cli("registry", "--run-dir", run_dir).stdout
    header = next(_cells(line, "┃") for line in table.splitlines() if "┃" in line)
    assert header == ["stage", "expert", "source", "role", "built-in", "records"]
    rows = [_cells(line, "│") for line in table.splitlines() if line.startswith("│")]
    assert rows == [["", "base", "gutenberg", "base", "", "2"], ["0", "mail", "mail", "expert", "", "1"]]


def _cells(line: str, bar: str) -> list[str]:
    return [cell.strip() for cell in line.split(bar)[1:-1]]


def test_ingest_json_says_the_role(run_dir, tmp_path):
    (tmp_path / "more.txt").write_text("Reader, I married him.\n")
    result = cli("ingest", "--source", "gutenberg", tmp_path / "more.txt", "--run-dir", run_dir, "--json")
    assert json.loads(result.stdout) == {
        "source": "gutenberg",
        "expert": "base",
        "role": "base",
        "records_added": 1,
    }


def test_integer_ids_are_stored_as_text_and_ingest_says_so(run_dir, tmp_path):
    path = tmp_path / "mail.jsonl"
    path.write_text(
        json.dumps({"id": 5, "text": "see you at five"}) + "\n" + json.dumps({"id": "x", "text": "ok"}) + "\n"
    )
    result = cli("ingest", "--source", "mail", path, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert 'note: 1 ids were JSON integers, stored as their decimal text (the id 5 is "5"' in result.stdout
    dry = cli("forget", "--record", "5", "--dry-run", "--run-dir", run_dir, "--json")
    assert dry.returncode == 0, dry.stderr
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": "7", "text": "a"}) + "\n" + json.dumps({"id": 7, "text": "b"}) + "\n")
    refused = cli("ingest", "--source", "mail", clash, "--run-dir", run_dir)
    assert refused.returncode == 2 and "duplicate id '7'" in refused.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "notes", "--role", "bse"], "unknown role 'bse'; roles: expert, base"),
        (["--source", "notes", "--role", "base", "--expert", "kitchen"], "not expert 'kitchen'"),
        (["--source", "notes", "--expert", "base"], "'base' is reserved for the base model"),
        (["--source", "base"], "'base' is reserved for the base model: name the expert with --expert NAME"),
        (["--source", "mail", "--role", "base"], "source 'mail' has role 'expert', not 'base'"),
    ],
)
def test_a_role_that_does_not_fit_is_one_line_and_exit_2(run_dir, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("a note\n")
    before = cli("registry", "--run-dir", run_dir, "--json").stdout
    result = cli("ingest", *args, tmp_path / "notes.txt", "--run-dir", run_dir)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli("registry", "--run-dir", run_dir, "--json").stdout == before


def test_an_unknown_role_creates_no_run_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("a note\n")
    result = cli("ingest", "--source", "notes", "--role", "public", tmp_path / "notes.txt", "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "unknown role 'public'" in result.stderr
    assert not (tmp_path / "r").exists()


def test_drop_expert_base_is_refused_with_what_to_do_instead(run_dir):
    result = cli("drop", "--expert", "base", "--run-dir", run_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the base model is not an expert: drop its sources (--source NAME)"
    ]
