"""A run with a base model (base sources, experts branched from it): every change still equals the
oracle, which trains the base too; an expert's forget keeps the base's file, a base source's forget is
a full rebuild and says so."""

import hashlib
import json
import shutil

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.storage.builds import served_config
from tests.conftest import TINY
from tests.unlearning.test_oracle import assert_equal_to_oracle, file_hashes, ids_of

WITH_BASE = ["data.corpus.base_domains=2"]  # football and legal become base sources
BASE_FILE = "base.safetensors"


@pytest.fixture(scope="module")
def base_run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("base") / "run"
    Run(run_dir).train(TINY, WITH_BASE)
    return run_dir


@pytest.fixture
def base_copy(base_run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run_dir, dst)
    return dst


def test_the_base_trains_first_on_base_sources_only(base_run_dir):
    info = Run(base_run_dir).info()
    roles = {s["name"]: s["role"] for s in info["sources"]}
    assert roles == {"football": "base", "legal": "base", "recipes": "expert", "weather": "expert", "code": "expert"}
    assert info["experts"] == ["recipes", "weather", "code"]  # the router's stages: the base is not one
    files = info["manifest"]["files"]
    assert list(files)[0] == BASE_FILE
    assert files[BASE_FILE]["kind"] == "base"
    assert files[BASE_FILE]["records"] == len(ids_of(base_run_dir, "football")[0] + ids_of(base_run_dir, "legal")[0])


def test_experts_branch_from_the_base_and_a_byte_router_ignores_it(tmp_path):
    """Same expert records, no base: different expert weights (they start from the base's); with
    model.router.features=bytes the router stages are those of the run without a base."""
    plain, byte_router = tmp_path / "plain", tmp_path / "bytes"
    Run(plain).train(TINY)
    Run(byte_router).train(TINY, [*WITH_BASE, "model.router.features=bytes"])
    a, b = file_hashes(byte_router), file_hashes(plain)
    assert a["experts/recipes.safetensors"] != b["experts/recipes.safetensors"]
    assert all(a[p] == b[p] for p in b if p.startswith("router/"))
    assert not any(p.startswith("router/features/") for p in a)


def test_the_router_is_a_head_on_base_features(base_run_dir):
    from moe_unlearn.models.loading import load_version
    from moe_unlearn.models.router import FeatureRouter

    model, manifest = load_version(base_run_dir, 1)
    assert isinstance(model.router, FeatureRouter)
    assert {p for p in manifest["files"] if p.startswith("router/features/")} == {
        "router/features/recipes.safetensors",
        "router/features/weather.safetensors",
        "router/features/code.safetensors",
    }
    assert manifest["eval"]["router_top1"]["16"] >= 0.0  # evaluated through the base


def test_the_loss_weighting_of_stages_retrains_the_stages_alone(base_copy):
    """A head on base features weighs each expert's records equally by default (train.router.balance);
    turning it off is a change of the stages only: base, experts and features keep their files."""
    before = file_hashes(base_copy)
    Run(base_copy).train(TINY, [*WITH_BASE, "train.router.balance=none"])
    after = file_hashes(base_copy)
    assert after.keys() == before.keys()
    changed = {p for p in before if after[p] != before[p]}
    assert changed == {p for p in before if p.startswith("router/stage_") and p != "router/stage_0.safetensors"}


def test_the_head_batch_size_retrains_the_stages_alone(base_copy):
    """`train.router.head_batch_size` is read by stages on base features only: a change retrains them and
    keeps the base, the experts and the features files."""
    before = file_hashes(base_copy)
    Run(base_copy).train(TINY, [*WITH_BASE, "train.router.head_batch_size=7"])
    after = file_hashes(base_copy)
    changed = {p for p in before if after[p] != before[p]}
    assert changed == {p for p in before if p.startswith("router/stage_") and p != "router/stage_0.safetensors"}


def test_the_head_step_floor_changes_the_stages_alone(base_copy, tmp_path):
    """`train.router.head_min_steps` is read by stages on base features only: raised above a stage's
    epochs (tiny's step cap lifted) it changes every stage with a choice to learn, and no other file."""
    lifted = [*WITH_BASE, "train.router.max_steps=-1"]
    other = tmp_path / "other"
    shutil.copytree(base_copy, other)
    Run(base_copy).train(TINY, [*lifted, "train.router.head_min_steps=0"])
    Run(other).train(TINY, [*lifted, "train.router.head_min_steps=50"])
    before, after = file_hashes(base_copy), file_hashes(other)
    assert after.keys() == before.keys()
    changed = {p for p in before if after[p] != before[p]}
    assert {p for p in before if p.startswith("router/stage_") and p != "router/stage_0.safetensors"} <= changed
    assert all(p.startswith("router/stage_") for p in changed)


def test_a_router_of_the_older_feature_layout_asks_for_a_retrain():
    """Versions built before the features held the byte embeddings: a clear line, not a shape error."""
    from moe_unlearn.config import load_config
    from moe_unlearn.models.expert import ByteTransformer
    from moe_unlearn.models.loading import compose
    from moe_unlearn.models.router import FeatureRouter

    cfg = load_config(TINY, WITH_BASE)
    weights = ByteTransformer(cfg.model.expert).state_dict()
    older = FeatureRouter(cfg.model.router, cfg.model.expert.d_model, 1).state_dict()  # hidden states alone
    with pytest.raises(UserError, match="older layout.*retrain") as info:
        compose(cfg, {"recipes": weights}, older, base=weights)
    assert "\n" not in str(info.value)


def test_features_of_an_older_layout_are_recomputed_not_reused(base_copy):
    """A version whose features files predate the current layout (narrower rows, no `layout` in the
    manifest): `train` recomputes every row instead of mixing old rows into a new file."""
    from safetensors.torch import load_file, save_file

    before = file_hashes(base_copy)
    manifest_path = base_copy / "versions" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for path, entry in manifest["files"].items():
        if path.startswith("router/features/"):
            file = base_copy / "versions" / "1" / path
            tensors = load_file(file)
            save_file({**tensors, "features": tensors["features"][..., :-8].contiguous()}, file)
            entry.pop("layout")
            entry["lineage"] += "-older"
            entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    Run(base_copy).train(TINY, WITH_BASE)
    assert file_hashes(base_copy) == before  # the rows of a fresh build, the stages trained on them


def test_a_router_on_base_features_needs_a_base(tmp_path):
    with pytest.raises(UserError, match="model.router.features=base needs base sources"):
        Run(tmp_path / "run").train(TINY, ["model.router.features=base"])


def test_the_mixture_names_the_base_and_its_rule(base_run_dir):
    result = Run(base_run_dir).score("Chicken soup with leeks, simmered slowly.")
    assert set(result["expert_weights"]) == {"recipes", "weather", "code", "base"}
    assert result["mixing"]["rule"] == "posterior" and "base_prior" in result["mixing"]
    assert Run(base_run_dir).info()["manifest"]["mixing"] == result["mixing"]


def test_an_expert_forget_keeps_the_base_and_the_other_experts_and_equals_the_oracle(base_copy, tmp_path):
    before = file_hashes(base_copy)
    cert = Run(base_copy).forget(records=ids_of(base_copy, "weather")[0][:2])
    assert cert["retrained"]["experts"] == ["weather"]
    assert cert["retrained"]["base"] is False and cert["retrained"]["full_rebuild"] is False
    after = file_hashes(base_copy)
    for unchanged in (BASE_FILE, "experts/recipes.safetensors", "experts/code.safetensors"):
        assert after[unchanged] == before[unchanged]
    for unchanged in ("router/features/recipes.safetensors", "router/features/code.safetensors"):
        assert after[unchanged] == before[unchanged]
    assert_equal_to_oracle(base_copy, tmp_path)


def test_a_forget_keeps_the_features_of_the_records_it_keeps(base_copy):
    """Features are a pure function of base and record: the forget's new file holds the old rows."""
    from moe_unlearn.models.loading import load_version
    from moe_unlearn.storage.versions import load_tensors
    from moe_unlearn.training.features import read_features

    def rows(version: int) -> dict:
        _, manifest = load_version(base_copy, version)
        path = "router/features/weather.safetensors"
        file = base_copy / "versions" / str(version) / path
        return read_features(load_tensors(file, manifest["files"][path]["sha256"]))

    before = rows(1)
    gone = ids_of(base_copy, "weather")[0][:2]
    Run(base_copy).forget(records=gone)
    after = rows(2)
    assert set(after) == set(before) - set(gone)
    assert all(after[i].equal(before[i]) for i in after)


def test_a_base_source_forget_is_a_full_rebuild_that_says_so_and_equals_the_oracle(base_copy, tmp_path):
    run = Run(base_copy)
    record = ids_of(base_copy, "legal")[0][0]
    dry = run.forget(records=[record], dry_run=True)
    assert dry["would_retrain"]["full_rebuild"] is True
    assert dry["would_retrain"]["experts"] == ["recipes", "weather", "code"]
    cert = run.forget(records=[record])
    assert cert["retrained"]["base"] is True and cert["retrained"]["full_rebuild"] is True
    assert "full rebuild" in cert["statement"]
    assert cert["retrained"]["experts"] == ["code", "recipes", "weather"]
    assert_equal_to_oracle(base_copy, tmp_path)


def test_a_base_source_forget_is_refused_for_approximate_methods(base_copy):
    record = ids_of(base_copy, "legal")[0][0]
    with pytest.raises(UserError, match="full rebuild"):
        Run(base_copy).forget(records=[record], method="gradient-ascent")


def test_drop_and_add_with_a_base_equal_the_oracle(base_copy, tmp_path):
    run = Run(base_copy)
    before = file_hashes(base_copy)
    run.drop(source="weather")
    assert file_hashes(base_copy)[BASE_FILE] == before[BASE_FILE]
    assert_equal_to_oracle(base_copy, tmp_path / "drop")
    path = tmp_path / "news.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"news-{i}", "text": f"Headline {i}: markets rally again"}) + "\n" for i in range(30))
    )
    manifest = run.add("news", [path])
    assert manifest["trained"] == [
        "experts/news.safetensors",
        "router/features/news.safetensors",
        "router/stage_2.safetensors",
    ]
    assert_equal_to_oracle(base_copy, tmp_path / "add")


def test_update_of_a_base_source_rebuilds_every_expert_and_equals_the_oracle(base_copy, tmp_path):
    path = tmp_path / "more.txt"
    path.write_text("\n\n".join(f"Clause {i}. The tenant shall keep the premises in good repair." for i in range(12)))
    run = Run(base_copy)
    run.ingest("legal", [path])
    manifest = run.update()
    assert manifest["trained"][:4] == [
        BASE_FILE,
        "experts/recipes.safetensors",
        "experts/weather.safetensors",
        "experts/code.safetensors",
    ]
    assert_equal_to_oracle(base_copy, tmp_path)


def test_frozen_parts_keep_the_base_weights(tmp_path):
    from moe_unlearn.models.loading import load_version

    run_dir = tmp_path / "frozen"
    Run(run_dir).train(TINY, [*WITH_BASE, "train.frozen=[tok,blocks.0.attn]"])
    model, _ = load_version(run_dir, 1)
    base, expert = model.base.state_dict(), model.experts[0].state_dict()
    for name in ("tok.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias"):
        assert expert[name].equal(base[name])
    assert not expert["blocks.0.mlp.0.weight"].equal(base["blocks.0.mlp.0.weight"])
    assert served_config(run_dir).train.frozen == ["tok", "blocks.0.attn"]


def test_an_unknown_frozen_part_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="train.frozen: 'blocks.9'"):
        Run(tmp_path / "bad").train(TINY, [*WITH_BASE, "train.frozen=[blocks.9]"])


def test_the_built_in_corpus_can_hold_back_a_public_share_of_each_domain_as_base(tmp_path):
    run = Run(tmp_path / "run")
    run.init(TINY, ["data.corpus.base_records=20"])
    sources = {s["name"]: s for s in run.info()["sources"]}
    assert sources["public"]["role"] == "base" and sources["public"]["records"] == 3 * 20
    assert {s for s, info in sources.items() if info["role"] == "expert"} == {"recipes", "weather", "code"}
    ids = {r.id for r in run.registry.records(["public"])}
    assert "recipes-000060" in ids and "recipes-000059" not in ids  # after the experts' 60 records


def test_data_base_sources_must_be_base_in_the_registry(tmp_path):
    """A config that names a base source refuses a registry where it is an expert (roles are set at ingest)."""
    text = tmp_path / "dict.txt"
    text.write_text("\n\n".join(f"word{i}: a word of the dictionary, entry {i}." for i in range(10)))
    run = Run(tmp_path / "run")
    run.init(TINY, ["data.builtin=false"])
    run.ingest("gcide", [text])
    with pytest.raises(UserError, match="data.base_sources names 'gcide', an expert source"):
        run.train(TINY, ["data.builtin=false", "data.base_sources=[gcide]"])
