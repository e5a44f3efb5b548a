"""Training a version: determinism, router stages with Fisher, reuse of unchanged files."""

import pytest
from safetensors.torch import load_file

from moe_unlearn import Run, UserError
from moe_unlearn.rundir import read_current, version_dir
from moe_unlearn.storage.versions import tensor_hashes
from tests.conftest import TINY


def test_same_config_twice_gives_identical_tensors(tiny_run_dir, tmp_path):
    Run(tmp_path / "again").train(TINY)
    for path in Run(tiny_run_dir).info()["manifest"]["files"]:
        ours = tensor_hashes(load_file(version_dir(tmp_path / "again", 1) / path))
        theirs = tensor_hashes(load_file(version_dir(tiny_run_dir, 1) / path))
        assert ours == theirs, path


def test_router_stages_are_saved_with_their_fisher(tiny_run_dir):
    for stage in range(3):
        tensors = load_file(version_dir(tiny_run_dir, 1) / f"router/stage_{stage}.safetensors")
        weights = {k.removeprefix("router."): v for k, v in tensors.items() if k.startswith("router.")}
        fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
        assert weights["head.weight"].shape[0] == stage + 1  # one new output row per stage
        assert set(fisher) == set(weights)
        assert all(f.shape == weights[k].shape and (f >= 0).all() for k, f in fisher.items())
        total = sum(float(f.sum()) for f in fisher.values())
        assert (total == 0) if stage == 0 else (total > 0)  # one output: nothing to be certain about


def test_each_stage_starts_from_the_previous_one(tiny_run_dir):
    vdir = version_dir(tiny_run_dir, 1)
    s0 = load_file(vdir / "router/stage_0.safetensors")
    s1 = load_file(vdir / "router/stage_1.safetensors")
    assert s0["router.head.weight"].shape == (1, 32) and s1["router.head.weight"].shape == (2, 32)
    # EWC keeps the shared features close to the previous stage's: closer than to a fresh draw.
    drift = (s1["router.conv.weight"] - s0["router.conv.weight"]).abs().mean()
    assert drift < s0["router.conv.weight"].abs().mean()


def test_retraining_unchanged_data_trains_nothing(tiny_copy):
    manifest = Run(tiny_copy).train(TINY)
    assert manifest["version"] == 1
    assert [p.name for p in (tiny_copy / "versions").iterdir()] == ["1"]


def test_new_source_trains_its_expert_and_the_router_stages_only(tiny_copy, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(f"Note {i}: call Ana at {1000 + i} about the weather." for i in range(30)))
    run = Run(tiny_copy)
    run.ingest("notes", [notes])
    manifest = run.train(TINY)
    assert manifest["version"] == 2
    assert manifest["trained"] == ["experts/notes.safetensors", "router/stage_3.safetensors"]
    old = {p: e for p, e in manifest["files"].items() if p != "experts/notes.safetensors"}
    assert all(e["trained_in_version"] == 1 for p, e in old.items() if p != "router/stage_3.safetensors")
    assert not version_dir(tiny_copy, 1).exists()  # the previous version is cleaned up after the switch
    assert run.score("Note 3: call Ana")["version"] == 2


def test_train_only_named_experts(tiny_copy):
    before = Run(tiny_copy).info()["manifest"]["files"]
    manifest = Run(tiny_copy).train(TINY, ["train.experts=[weather]"])
    assert manifest["trained"] == ["experts/weather.safetensors"]  # same data: the router stages are reused
    assert {p: e["sha256"] for p, e in manifest["files"].items()} == {p: e["sha256"] for p, e in before.items()}
    with pytest.raises(UserError, match="unknown experts"):
        Run(tiny_copy).train(TINY, ["train.experts=[nope]"])


def test_changed_config_for_unlisted_experts_trains_the_listed_one_without_going_live(tiny_copy):
    # the others would be trained on other machines and imported (tests/training/test_bundles.py)
    result = Run(tiny_copy).train(TINY, ["train.experts=[weather]", "train.expert.lr=0.001"])
    assert result["live"] is False and result["version"] == 2 and read_current(tiny_copy) == 1
    assert result["trained"] == ["experts/weather.safetensors"]
    assert result["remaining"] == [
        "experts/recipes.safetensors", "experts/code.safetensors",
        *(f"router/stage_{i}.safetensors" for i in range(3)),
    ]  # fmt: skip
    assert Run(tiny_copy).score("Light rain")["version"] == 1  # the served version is untouched


def test_held_out_evaluation_leaves_out_copies_of_trained_text(tmp_path):
    from moe_unlearn.config import load_config
    from moe_unlearn.training.plan import plan

    overrides = ["data.corpus.canaries=6", "data.corpus.canary_repeats=10", "model.expert.block_size=160"]
    run = Run(tmp_path / "run")
    run.init(TINY, overrides)
    jobs, heldout = plan(run.registry, load_config(TINY, overrides))
    trained = {r.text for job in jobs if job.kind == "expert" for r in job.records}
    trained_copies = [r for job in jobs for r in job.records if r.id.startswith("canary-")]
    assert trained_copies  # canaries are trained on, so some of their held-out copies would be seen text
    assert all(r.text not in trained for records in heldout.values() for r in records)
    assert all(records for records in heldout.values())
