"""The central guarantee: after forget, drop, add or update, the served version is the model that
training from scratch (fresh directory, fresh process) on the retained records gives, tensor for
tensor; and exactly the affected files were retrained."""

import hashlib
import json

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.data.splits import is_heldout, replay_sample
from moe_unlearn.storage.builds import served_config
from moe_unlearn.unlearning.oracle import compare as oracle_compare
from tests.conftest import TINY


def file_hashes(run_dir) -> dict[str, str]:
    """sha256 of every model file of the served version, read from disk."""
    run = Run(run_dir)
    manifest = run.info()["manifest"]
    vdir = run_dir / "versions" / str(manifest["version"])
    return {p: hashlib.sha256((vdir / p).read_bytes()).hexdigest() for p in manifest["files"]}


def ids_of(run_dir, source: str) -> tuple[list[str], list[str]]:
    """(trained ids, held-out ids) of a source under the served config."""
    cfg = served_config(run_dir)
    records = Run(run_dir).registry.records([source])
    held = [r.id for r in records if is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)]
    return [r.id for r in records if r.id not in held], held


def assert_equal_to_oracle(run_dir, tmp_path) -> None:
    result = Run(run_dir).verify(tmp_path / "oracle")
    assert result["comparable"]
    assert result["equal"], result["files"]
    assert set(result["files"].values()) == {"equal"}


def test_forget_retrains_exactly_the_expert_and_later_stages_and_equals_the_oracle(tiny_copy, tmp_path):
    before = file_hashes(tiny_copy)
    run = Run(tiny_copy)
    cert = run.forget(records=ids_of(tiny_copy, "weather")[0][:3])
    assert cert["retrained"]["experts"] == ["weather"]
    assert cert["retrained"]["router_stages"] == [1, 2]
    after = file_hashes(tiny_copy)
    for unchanged in ("experts/recipes.safetensors", "experts/code.safetensors", "router/stage_0.safetensors"):
        assert after[unchanged] == before[unchanged]
    assert after["experts/weather.safetensors"] != before["experts/weather.safetensors"]
    assert_equal_to_oracle(tiny_copy, tmp_path)


def test_stages_rerun_only_when_the_forgotten_record_was_in_their_sample(tmp_path):
    run_dir = tmp_path / "run"
    run = Run(run_dir)
    run.train(TINY, ["train.router.stage_records=10"])
    trained = ids_of(run_dir, "weather")[0]
    records = [r for r in run.registry.records(["weather"]) if r.id in trained]
    sampled = {r.id for r in replay_sample(records, served_config(run_dir).seed, 10)}
    cert = run.forget(records=[next(i for i in trained if i not in sampled)])
    assert cert["retrained"]["experts"] == ["weather"]
    assert cert["retrained"]["router_stages"] == []  # every stage's training set is unchanged
    assert_equal_to_oracle(run_dir, tmp_path)
    cert = run.forget(records=[sorted(sampled)[0]])
    assert cert["retrained"]["router_stages"] == [1, 2]
    assert_equal_to_oracle(run_dir, tmp_path / "again")


def test_forgetting_a_heldout_record_retrains_nothing_but_deletes_it(tiny_copy):
    run = Run(tiny_copy)
    held = ids_of(tiny_copy, "code")[1][0]
    version = run.info()["current_version"]
    cert = run.forget(records=[held])
    assert cert["retrained"] == {"base": False, "full_rebuild": False, "experts": [], "router_stages": [], "files": []}
    assert cert["records"][0]["held_out"] is True
    assert run.info()["current_version"] == version
    assert run.registry.record_rows([held]) == {}


def test_drop_a_single_source_expert_deletes_it_and_reruns_later_stages(tiny_copy, tmp_path):
    before = file_hashes(tiny_copy)
    cert = Run(tiny_copy).drop(source="weather")
    assert cert["retrained"]["experts"] == []
    assert cert["retrained"]["router_stages"] == [1]  # code moves to stage 1; stage 0 is kept
    after = file_hashes(tiny_copy)
    assert "experts/weather.safetensors" not in after and "router/stage_2.safetensors" not in after
    assert after["experts/code.safetensors"] == before["experts/code.safetensors"]
    assert after["router/stage_0.safetensors"] == before["router/stage_0.safetensors"]
    assert_equal_to_oracle(tiny_copy, tmp_path)


def test_drop_the_first_expert_reruns_every_stage(tiny_copy, tmp_path):
    cert = Run(tiny_copy).drop(expert="recipes")
    assert cert["retrained"]["experts"] == []
    assert cert["retrained"]["router_stages"] == [0, 1]
    assert_equal_to_oracle(tiny_copy, tmp_path)


def test_drop_a_source_of_a_shared_expert_retrains_only_that_expert(tmp_path):
    run_dir = tmp_path / "shared"
    run = Run(run_dir)
    run.train(TINY, ["experts=[{name: mixed, sources: [weather, code]}]"])
    before = file_hashes(run_dir)
    assert run.info()["experts"] == ["recipes", "mixed"]
    cert = run.drop(source="code")
    assert cert["retrained"]["experts"] == ["mixed"]
    assert cert["retrained"]["router_stages"] == [1]
    assert file_hashes(run_dir)["experts/recipes.safetensors"] == before["experts/recipes.safetensors"]
    assert_equal_to_oracle(run_dir, tmp_path)


def test_add_trains_one_expert_and_one_stage(tiny_copy, tmp_path):
    before = file_hashes(tiny_copy)
    path = tmp_path / "news.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"news-{i}", "text": f"Headline {i}: markets rally again"}) + "\n" for i in range(30))
    )
    manifest = Run(tiny_copy).add("news", [path])
    assert manifest["trained"] == ["experts/news.safetensors", "router/stage_3.safetensors"]
    after = file_hashes(tiny_copy)
    assert all(after[p] == h for p, h in before.items())
    assert_equal_to_oracle(tiny_copy, tmp_path)


def test_update_retrains_the_expert_that_gained_records(tiny_copy, tmp_path):
    path = tmp_path / "more.txt"
    path.write_text("\n\n".join(f"Oslo, Monday {i} May. Light snow, 2C, wind from the north." for i in range(12)))
    run = Run(tiny_copy)
    run.ingest("weather", [path])
    manifest = run.update()
    assert manifest["trained"] == [
        "experts/weather.safetensors",
        "router/stage_1.safetensors",
        "router/stage_2.safetensors",
    ]
    assert_equal_to_oracle(tiny_copy, tmp_path)


def test_verify_detects_a_model_that_is_not_the_oracle(tiny_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    run = Run(tiny_copy)
    manifest = run.info()["manifest"]
    path = tiny_copy / "versions" / str(manifest["version"]) / "experts" / "code.safetensors"
    tensors = load_file(path)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1e-3
    save_file(tensors, path)  # then fix the manifest so only verify can tell
    mpath = path.parents[1] / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["experts/code.safetensors"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    mpath.write_text(json.dumps(m))
    result = run.verify(tmp_path / "oracle")
    assert not result["equal"]
    assert result["files"]["experts/code.safetensors"].startswith("differs")


def test_verify_on_another_torch_exits_3_and_compares_lineage_instead(tiny_copy, tmp_path, monkeypatch):
    """Built elsewhere (here: a manifest naming another torch), bit-identity cannot be judged: exit 3,
    saying which part of the environment differs, and the manifests' training-data lineage compared."""
    from typer.testing import CliRunner

    from moe_unlearn import cli
    from moe_unlearn.unlearning import oracle

    real = oracle.environment
    monkeypatch.setattr(oracle, "environment", lambda: {**real(), "torch": "0.0-elsewhere"})
    done = CliRunner().invoke(cli.app, ["verify", "--run-dir", str(tiny_copy), "--work-dir", str(tmp_path / "o")])
    assert done.exit_code == 3, done.output
    assert "different torch" in done.output and "lineage: identical" in done.output


def test_an_expert_imported_from_another_cpu_makes_verify_unable_to_judge_bit_identity(tiny_copy, tmp_path):
    """`expert import` keeps the environment each file was trained in: one trained on another CPU means
    bit-identity is not expected, even though the version itself was assembled here."""
    mpath = tiny_copy / "versions" / "1" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["experts/code.safetensors"]["environment"] = {
        **m["environment"],
        "cpu_flags_sha256": "another-cpu",
    }
    mpath.write_text(json.dumps(m))
    result = Run(tiny_copy).verify(tmp_path / "oracle")
    assert not result["comparable"] and result["environment_differs"] == ["cpu_flags_sha256"]
    assert result["lineage_equal"]


def test_lineage_comparison_names_the_files_trained_on_other_records(tiny_run_dir, tiny_copy):
    Run(tiny_copy).forget(records=ids_of(tiny_copy, "weather")[0][:1])
    result = oracle_compare(tiny_copy, tiny_run_dir)  # as if the oracle had trained on the old records
    assert not result["lineage_equal"]
    assert result["lineage_differs"] == [
        "experts/weather.safetensors",
        *(
            f"router/stage_{i}.safetensors"
            for i in (1, 2)
            if result["files"][f"router/stage_{i}.safetensors"] != "equal"
        ),
    ]
    assert oracle_compare(tiny_run_dir, tiny_run_dir)["lineage_equal"]


@pytest.mark.parametrize("bad", ["recipes-000000", "nope"])
def test_forget_rejects_unknown_ids_before_changing_anything(tiny_copy, bad):
    run = Run(tiny_copy)
    with pytest.raises(UserError):
        run.forget(records=[bad], source="weather")
    assert run.requests() == []
