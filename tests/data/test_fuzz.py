"""Property-based fuzzing (hypothesis) of what users feed the project: ingest files (any bytes as .txt and
.jsonl, any JSON values as lines), config overrides (any dotlist) and command lines (any arguments to
the commands that read a run). Every input either works or is refused with a UserError (the CLI: exit
2, one line); never another exception; a refused ingest leaves the store as it was. Examples are
bounded (`settings` below) to keep `make test` short; the counts are in the closing notes."""

import json
import sqlite3
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moe_unlearn import Run, UserError
from moe_unlearn.config import load_config
from moe_unlearn.data.ingest import read_records
from tests.conftest import cli

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["id", "text", "source", "x"]) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=8,
)


def records_or_user_error(path, source="notes") -> list | None:
    try:
        return list(read_records(path, source))
    except UserError as e:
        assert "\n" not in str(e)  # one line
        return None


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".txt", ".jsonl"]))
def test_any_bytes_as_a_file_are_records_or_one_user_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(data)
    got = records_or_user_error(path)
    if got is not None:
        assert all(r.text.strip() and r.id.strip() and r.source == "notes" for r in got)


@FUZZ
@given(lines=st.lists(JSON, min_size=1, max_size=5))
def test_any_json_lines_are_records_or_one_user_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "input.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in lines) + "\n")
    got = records_or_user_error(path)
    if got is not None:
        assert len({r.id for r in got}) == len(got)  # ids are unique


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    run = Run(tmp_path_factory.mktemp("store") / "run")
    run.init(None, ["data.builtin=false"])
    first = tmp_path_factory.mktemp("first") / "notes.jsonl"
    first.write_text(json.dumps({"id": "n1", "text": "lunch at noon"}) + "\n")
    run.ingest("notes", [first])
    return run


@FUZZ
@given(data=st.binary(max_size=400))
def test_a_refused_ingest_leaves_the_store_as_it_was(store, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "more.jsonl"
    path.write_bytes(data)
    before = store.registry.count_records()
    try:
        store.ingest("notes", [path])
    except UserError:
        assert store.registry.count_records() == before
    db = sqlite3.connect(store.run_dir / "registry.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


KEYS = ["seed", "model.expert.d_model", "model.expert.n_head", "train.expert.lr", "train.expert.max_steps",
        "model.mixing.rule", "model.mixing.keep", "data.corpus.domains", "trainer.threads", "no.such.key",
        "model.expert", "experts", "data.base_sources"]  # fmt: skip
VALUES = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.text(string.printable, max_size=12),
    st.sampled_from(["[]", "[a, b]", "{}", "null", "1e-3", "nan", "true"]),
)


@FUZZ
@given(
    overrides=st.lists(
        st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map("=".join), st.text(max_size=15)), max_size=4
    )
)
@example(overrides=["model.expert.n_head=0"])  # found by this test: a ZeroDivisionError in the checks
@example(overrides=["seed=,"])  # found by this test: a YAML error let through
def test_any_config_overrides_load_or_are_one_user_error(overrides):
    try:
        load_config(None, overrides)
    except UserError as e:
        assert "\n" not in str(e).strip()


ARGS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "--json",
                "--run-dir",
                "--max-new-bytes",
                "-n",
                "--seed",
                "--temperature",
                "--record",
                "--dry-run",
                "x",
                "-1",
                "1e9",
                "",
                "\u00e9",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(
        [["registry"], ["generate"], ["score"], ["forget", "--dry-run"], ["evaluate"], ["canaries"]]
    ),
    args=ARGS,
)
def test_any_arguments_to_a_reading_command_work_or_exit_2_in_one_line(tiny_run_dir, command, args):
    result = cli(*command, *args, "--run-dir", tiny_run_dir) if "--run-dir" not in args else cli(*command, *args)
    # `cli` raises any exception the CLI let through: reaching here means none did
    assert result.returncode in (0, 2), (command, args, result.stderr)
    if result.returncode == 2 and result.stderr.startswith("error:"):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
