"""End to end: train with canaries -> `forget --audit` -> `verify` exits 0 -> `audit` writes the report;
an approximate forget (gradient ascent) is certified as such and `verify` exits 1; `canaries` shows a
canary before and after its forget (what `make run` ends with)."""

import json
import re
import shutil

import pytest

from moe_unlearn import Run
from moe_unlearn.data.corpus import make_canaries
from moe_unlearn.rundir import AUDIT_FILES, stray_files
from tests.conftest import TINY, cli

CANARIES, REPEATS = 136, 2


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    """A tiny run whose corpus holds 128 canaries, each inserted twice."""
    run_dir = tmp_path_factory.mktemp("audit") / "run"
    overrides = [f"data.corpus.canaries={CANARIES}", f"data.corpus.canary_repeats={REPEATS}"]
    Run(run_dir).train(TINY, [*overrides, "model.expert.block_size=160"])  # a canary fits in one block
    return run_dir


@pytest.fixture
def ids_file(tmp_path):
    """Every copy of every canary: forgetting them all makes them never-trained-on again."""
    path = tmp_path / "canaries.txt"
    ids = [i for c in make_canaries(CANARIES, 0, 3) for i in c.record_ids(REPEATS)]
    path.write_text("\n".join(ids) + "\n")
    return path


def forget(run_dir, ids_file, *extra) -> dict:
    # Ranks 272 canaries among 4,096 candidates under two models: ~2 minutes alone on 2 cores.
    args = ("forget", "--ids-file", ids_file, "--audit", "--json", "--run-dir", run_dir, *extra)
    done = cli(*args, timeout=900, process=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_exact_forget_audit_verify_and_report(canary_run, ids_file, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(canary_run, run_dir)
    certificate = forget(run_dir, ids_file)
    assert certificate["method"] == "exact" and certificate["oracle_equal"]

    assert cli("verify", "--run-dir", run_dir).returncode == 0

    done = cli("audit", "--request", certificate["request_id"], "--json", "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(p.rsplit("/", 1)[-1] for p in report["files"]) == sorted(AUDIT_FILES)
    assert not stray_files(run_dir)  # the report's files are on the run directory's allow-list
    canaries = report["canaries"]
    assert len(canaries["inserted"]["before"]) >= 128 and len(canaries["never_inserted"]["after"]) >= 128
    assert canaries["candidates"] >= 4096 and canaries["space_bits"] >= 20
    assert set(canaries["tests"]["after"]) == {"p_value", "mean_difference_bits"}
    assert canaries["extracted"]["of"] == len(canaries["inserted"]["before"])
    for attack in ("loss", "zlib", "min_k"):
        auc = report["membership"]["attacks"][attack]
        assert 0 <= auc["before"]["auc"] <= 1 and auc["after"]["se"] >= 0
        assert report["membership"]["privleak"][attack]["after"] == 0  # the after-model is the oracle
    assert set(report["bits_per_byte"]) == {"forget", "heldout", "retained"}
    assert 0.99 <= report["router"]["agreement"] <= 1 or report["router"]["prefixes"] > 0
    assert report["checks"]["verify"]["equal"] is True
    assert report["timings"]["oracle_seconds"] > 0 and report["timings"]["forget_seconds"] > 0
    text = (run_dir / "audits" / certificate["request_id"] / "audit.md").read_text()
    assert "AUC" in text and "exposure" in text.lower()
    secrets = [c.secret for c in make_canaries(CANARIES, 0, 3)]
    # Numbers only: no secret anywhere in the report. A secret of digits may occur inside a longer
    # number by chance (848677 in 0.307753333476416...), so it counts only standing alone.
    alone = [re.compile(rb"(?<![0-9a-zA-Z])" + re.escape(s.encode()) + rb"(?![0-9a-zA-Z])") for s in secrets[:20]]
    for name in AUDIT_FILES:
        data = (run_dir / "audits" / certificate["request_id"] / name).read_bytes()
        assert not any(pattern.search(data) for pattern in alone)


def test_approximate_forget_is_certified_as_such_and_verify_says_different(tiny_copy):
    """Audited like an exact one (the same measures; here without canaries, which keeps it quick), but
    certified APPROXIMATE, with no oracle for privleak, and `verify` finds it different."""
    run = Run(tiny_copy)
    weather = [r.id for r in run.registry.records(["weather"])][:20]
    certificate = run.forget(records=weather, audit=True, method="gradient-ascent")
    assert certificate["method"] == "gradient-ascent" and not certificate["oracle_equal"]
    assert "APPROXIMATE" in certificate["statement"]
    assert cli("verify", "--run-dir", tiny_copy).returncode == 1

    report = Run(tiny_copy).audit(certificate["request_id"])
    assert report["method"] == "gradient-ascent" and not report["exact"]
    assert report["membership"]["attacks"]["loss"]["after"]["se"] > 0
    assert report["membership"]["privleak"] is None  # no oracle to compare with
    assert report["canaries"] is None
    assert "not oracle-equal" in (tiny_copy / "audits" / certificate["request_id"] / "audit.md").read_text().lower()


def test_audit_of_an_unaudited_or_unknown_request_is_a_one_line_error(tiny_copy):
    request_id = Run(tiny_copy).forget(records=["recipes-000001"])["request_id"]
    for args, message in (((request_id,), "was not audited"), (("fgt-nope",), "unknown request")):
        done = cli("audit", "--request", *args, "--run-dir", tiny_copy)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unknown_method_is_a_user_error(tiny_copy):
    done = cli("forget", "--record", "recipes-000001", "--method", "magic", "--run-dir", tiny_copy)
    assert done.returncode == 2 and "unknown method" in done.stderr


def test_canaries_command_shows_a_canary_before_and_after_its_forget(canary_run, tmp_path):
    """What `make run` ends with: a canary's copies, the model's continuation and the secret's rank,
    before and after `forget --match` of its sentence."""
    run_dir = tmp_path / "run"
    shutil.copytree(canary_run, run_dir)
    args = ("canaries", "--id", "canary-0001", "--candidates", "63", "--run-dir", run_dir)
    before = json.loads(cli(*args, "--json").stdout)
    (row,) = before["canaries"]
    assert row["id"] == "canary-0001" and row["copies_trained_on"] >= 1 and 1 <= row["rank"] <= 64
    assert len(row["greedy"]) == len(row["secret"]) and row["extracted"] == (row["greedy"] == row["secret"])
    text = cli(*args).stdout
    assert row["secret"] in text and "greedy continuation" in text and "among 64 random secrets" in text

    sentence = row["prefix"].split("\n")[-1]
    assert cli("forget", "--match", sentence, "--run-dir", run_dir).returncode == 0
    after = json.loads(cli(*args, "--json").stdout)
    assert after["canaries"][0]["copies_trained_on"] == 0 and after["version"] == before["version"] + 1


def test_canaries_command_errors_are_one_line(canary_run, tiny_copy):
    for run_dir, args, message in (
        (canary_run, ("--id", "canary-9999"), "unknown canary"),
        (tiny_copy, (), "this run has no canaries"),
    ):
        done = cli("canaries", *args, "--run-dir", run_dir)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
