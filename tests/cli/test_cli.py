"""The command line end to end, as a user runs it: subprocesses, exit codes, JSON output."""

import json
import subprocess
import sys

import pytest

from moe_unlearn import Run
from tests.conftest import REPO, TINY, cli


def test_train_generate_score_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    trained = cli("train", "--config", TINY, "--run-dir", run_dir, "--json", process=True)
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads(trained.stdout)
    assert manifest["version"] == 1
    assert manifest["experts"] == ["recipes", "weather", "code"]
    assert len(manifest["trained"]) == 6  # 3 experts + 3 router stages
    assert set(manifest["eval"]["router_top1"]) == {"16", "32", "64"}
    assert not (REPO / "lightning_logs").exists()

    generated = cli("generate", "The", "--max-new-bytes", 30, "--seed", 7, "--run-dir", run_dir, "--json", process=True)
    assert generated.returncode == 0, generated.stderr
    g = json.loads(generated.stdout)
    assert g["version"] == 1 and g["prompt"] == "The"
    assert len(g["text"].encode("utf-8", errors="surrogateescape")) >= 1
    assert set(g["expert_weights"]) == {"recipes", "weather", "code"}
    again = json.loads(
        cli("generate", "The", "--max-new-bytes", 30, "--seed", 7, "--run-dir", run_dir, "--json", process=True).stdout
    )
    assert again["text"] == g["text"]  # seeded

    scored = cli("score", "Preheat the oven.", "--run-dir", run_dir, "--json", process=True)
    s = json.loads(scored.stdout)
    assert s["bytes"] == len("Preheat the oven.") and 0 < s["bits_per_byte"] < 9
    assert sum(s["expert_weights"].values()) == pytest.approx(1, abs=1e-3)

    registry = json.loads(cli("registry", "--run-dir", run_dir, "--json", process=True).stdout)
    assert registry["current_version"] == 1
    assert [s["name"] for s in registry["sources"]] == ["recipes", "weather", "code"]
    assert all(s["records"] == 60 for s in registry["sources"])


def test_api_and_cli_agree(tiny_run_dir):
    api = Run(tiny_run_dir)
    text = "Light rain in Lisbon, 12 degrees."
    assert json.loads(cli("score", text, "--run-dir", tiny_run_dir, "--json").stdout) == json.loads(
        json.dumps(api.score(text))
    )
    by_cli = json.loads(cli("generate", "Add", "-n", 20, "--seed", 3, "--run-dir", tiny_run_dir, "--json").stdout)
    assert by_cli == api.generate("Add", max_new_bytes=20, seed=3)
    assert json.loads(cli("registry", "--run-dir", tiny_run_dir, "--json").stdout) == json.loads(json.dumps(api.info()))


def test_evaluate_reports_what_training_reported(tiny_run_dir):
    trained = Run(tiny_run_dir).info()["manifest"]["eval"]
    result = cli("evaluate", "--run-dir", tiny_run_dir, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["eval"] == trained
    assert "held-out bits per byte" in cli("evaluate", "--run-dir", tiny_run_dir).stdout


def test_forget_skips_evaluation_and_evaluate_fills_in(tiny_copy):
    run = Run(tiny_copy)
    run.forget(records=["recipes-000001"])
    assert run.info()["manifest"]["eval"] is None
    result = cli("evaluate", "--run-dir", tiny_copy, "--json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["eval"]["heldout_bpb"]) == {"recipes", "weather", "code"}


def test_score_reads_stdin(tiny_run_dir):
    piped = json.loads(cli("score", "-", "--run-dir", tiny_run_dir, "--json", input="Preheat the oven.").stdout)
    direct = json.loads(cli("score", "Preheat the oven.", "--run-dir", tiny_run_dir, "--json").stdout)
    assert piped == direct


def test_init_creates_an_empty_run_for_ingest_then_refuses_to_run_twice(tmp_path):
    run_dir = tmp_path / "run"
    created = cli("init", "--config", TINY, "data.builtin=false", "--run-dir", run_dir)
    assert created.returncode == 0, created.stderr
    assert "0 records" in created.stdout
    (tmp_path / "notes.txt").write_text("first note\n\nsecond note\n")
    assert cli("ingest", "--source", "notes", tmp_path / "notes.txt", "--run-dir", run_dir).returncode == 0
    info = Run(run_dir).info()
    assert info["records"] == 2 and info["current_version"] is None
    again = cli("init", "--run-dir", run_dir)
    assert again.returncode == 2 and "already a run directory" in again.stderr


def test_ingest_into_a_missing_run_directory_says_what_it_made_and_undoes_it_when_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("first note\n\nsecond note\n")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    typo = tmp_path / "chekpoints"
    refused = cli("ingest", "--source", "notes", tmp_path / "bad.jsonl", "--run-dir", typo)
    assert refused.returncode == 2 and not typo.exists()  # a refused first ingest leaves nothing behind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's own file")
    assert cli("ingest", "--source", "notes", tmp_path / "bad.jsonl", "--run-dir", mine).returncode == 2
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]  # only what the ingest made is removed
    made = cli("ingest", "--source", "notes", tmp_path / "notes.txt", "--run-dir", typo, "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)["created_run_dir"]
    assert created["builtin_records"] > 1000 and created["builtin_sources"] >= 4
    said = cli("ingest", "--source", "more", tmp_path / "notes.txt", "--run-dir", tmp_path / "other")
    assert "created a new run directory holding the built-in corpus" in said.stdout and "--run-dir" in said.stdout
    (tmp_path / "later.txt").write_text("a later note\n")
    again = cli("ingest", "--source", "notes", tmp_path / "later.txt", "--run-dir", typo, "--json")
    assert again.returncode == 0, again.stderr
    assert "created_run_dir" not in json.loads(again.stdout)


@pytest.mark.parametrize(
    "command", [["verify"], ["update"], ["registry"], ["generate", "x"], ["audit", "--request", "r"]]
)
def test_commands_that_need_a_run_create_nothing_when_there_is_none(tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    for run_dir in (tmp_path / "missing", empty):
        result = cli(*command, "--run-dir", run_dir)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "missing").exists() and list(empty.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", TINY, "model.expert.d_modle=64"], "d_modle"),
        (["train", "--config", TINY, "train.expert.lr=fast"], "train.expert.lr"),
        (["train", "--config", "no/such.yaml"], "config file not found"),
        (["train", "--config", TINY, "model.expert.n_head=3"], "divisible"),
        (["train", "--config", TINY, "notakeyvalue"], "key=value"),
        (["score", "hello"], "no trained model"),
        (["generate", "hi"], "no trained model"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, message):
    run_dir = tmp_path / "run"
    if args[0] == "generate":
        cli("ingest", "--source", "notes", _txt(tmp_path), "--run-dir", run_dir)
    result = cli(*args, "--run-dir", run_dir)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_typo_in_config_trains_nothing(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("train", "--config", TINY, "trainer.treads=4", "--run-dir", run_dir).returncode == 2
    assert not (run_dir / "versions").exists()


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("train", "ingest", "registry", "generate", "score", "evaluate", "forget", "drop", "verify"):
        assert command in result.stdout


def test_train_py_is_the_same_as_moe_unlearn_train(tmp_path, tiny_run_dir):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", "--run-dir", run_dir, "--config", TINY, "trainer.progress_bar=false"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ours = Run(run_dir).info()["manifest"]["files"]
    fixture = Run(tiny_run_dir).info()["manifest"]["files"]
    assert {k: v["sha256"] for k, v in ours.items()} == {k: v["sha256"] for k, v in fixture.items()}


def _txt(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first note\n\nsecond note\n")
    return path


def test_the_cli_starts_without_the_training_stack():
    """Commands that do not train (generate, score, audit, ...) should not pay seconds of imports for
    Lightning, torchmetrics and matplotlib at every start; they are loaded where they are used."""
    heavy = ("lightning", "torchmetrics", "matplotlib")
    code = f"import sys, moe_unlearn.cli; print(*(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_score_generate_and_registry_name_the_mixing_rule(tiny_run_dir):
    """Users must know which rule produced a number: the manifest's, in every answer and in `registry`."""
    manifest = Run(tiny_run_dir).info()["manifest"]
    assert manifest["mixing"]["rule"] == "posterior" and set(manifest["mixing"]) >= {"decay", "keep", "threshold"}
    scored = json.loads(cli("score", "Rain in Porto.", "--run-dir", tiny_run_dir, "--json").stdout)
    generated = json.loads(cli("generate", "Rain", "-n", 5, "--run-dir", tiny_run_dir, "--json").stdout)
    assert scored["mixing"] == generated["mixing"] == manifest["mixing"]
    assert "mixing: posterior (decay 0.98" in cli("registry", "--run-dir", tiny_run_dir).stdout
    assert "mixing: posterior" in cli("score", "Rain in Porto.", "--run-dir", tiny_run_dir).stdout


def test_arguments_that_are_not_utf8_are_one_line_errors(tiny_copy):
    """Bytes that are not UTF-8 in an argument (Python hands them over as lone surrogates): exit 2, one
    line naming the argument, nothing forgotten."""
    bad = b"\xff\xfe".decode("utf-8", "surrogateescape")
    for args, what in [
        (["generate", bad], "the prompt is not valid UTF-8"),
        (["score", bad], "the text to score is not valid UTF-8"),
        (["forget", "--match", bad], "--match is not valid UTF-8"),
        (["forget", "--record", bad], "a record id is not valid UTF-8"),
    ]:
        result = cli(*args, "--run-dir", tiny_copy)
        assert result.returncode == 2 and what in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    real = subprocess.run(
        [sys.executable, "-m", "moe_unlearn", "generate", b"\xff\xfe", "--run-dir", str(tiny_copy)],
        capture_output=True,
        text=True,
    )
    assert real.returncode == 2 and real.stderr.strip().count("\n") == 0, real.stderr
    assert Run(tiny_copy).info()["manifest"]["version"] == 1  # nothing was forgotten


def test_forget_with_audit_before_any_training_is_refused_and_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("init", "--config", TINY, "--run-dir", run_dir).returncode == 0
    before = Run(run_dir).info()["records"]
    result = cli("forget", "--audit", "--record", "code-000001", "--run-dir", run_dir)
    assert result.returncode == 2 and "nothing to audit: no trained model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert Run(run_dir).info()["records"] == before and Run(run_dir).requests() == []


def test_json_output_is_one_document_with_progress_bars_on(tmp_path):
    """Lightning's progress bars draw on stderr: with --json, stdout parses whatever the config says."""
    run_dir = tmp_path / "run"
    result = cli("train", "--config", TINY, "trainer.progress_bar=true", "--json", "--run-dir", run_dir, process=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1
    assert "Epoch" in result.stderr  # the bars were drawn, on stderr
