"""bench.utility's pure helpers: who trains on what, the bytes each method sees, the targets' bounds."""

import math

import pytest

from bench.utility import (
    active_models,
    batch_bytes,
    bytes_seen,
    expert_params,
    jobs,
    markdown,
    pooled,
    router_params,
    targets,
)
from moe_unlearn.config import MixingConfig, load_config
from moe_unlearn.data.records import Record
from moe_unlearn.models.moe import BASE
from moe_unlearn.models.router import feature_size

METHODS = ("ours", "dense-matched", "dense-active", "sisa", "sisa-from-base")


def corpus(sources: list[str], n: int = 24) -> dict[str, list[Record]]:
    """n records a source, some longer than one 256-byte chunk."""
    return {s: [Record(f"{s}-{i:06d}", s, f"{s} record {i}. " * (1 + 7 * (i % 4))) for i in range(n)] for s in sources}


def ids(records: list[Record]) -> set[str]:
    return {r.id for r in records}


def total_bytes_seen(calls) -> int:
    return sum(bytes_seen(*call) for call in calls)


def check_partition(parts: list[list[Record]], everything: list[Record]) -> None:
    assert sum(len(p) for p in parts) == len(everything)
    assert set().union(*map(ids, parts)) == ids(everything)
    assert all(p for p in parts)  # every shard holds something


def test_without_base_sources_every_method_trains_on_every_record_for_the_same_bytes():
    cfg, train = load_config(), corpus(["a", "b", "c"])
    everything = [r for records in train.values() for r in records]
    calls = {m: jobs(m, cfg, 1e-3, train) for m in METHODS}
    assert [(name, ids(records)) for _, name, records in calls["ours"]] == [(s, ids(train[s])) for s in train]
    assert all(c.train.expert.lr == 1e-3 for c, _, _ in calls["ours"])
    ((dense_cfg, name, records),) = calls["dense-matched"]
    assert name == "dense-matched" and records == everything and dense_cfg.train.expert.max_steps == -1
    one = expert_params(cfg.model.expert)
    assert expert_params(dense_cfg.model.expert) == pytest.approx(3 * one + router_params(cfg, 3), rel=0.1)
    active = calls["dense-active"][0][0].model.expert
    assert expert_params(active) == pytest.approx(2 * one + router_params(cfg, 3), rel=0.1)  # keep 2 of 3
    assert len(calls["sisa"]) == 3 and all(c.model.expert == cfg.model.expert for c, _, _ in calls["sisa"])
    check_partition([records for _, _, records in calls["sisa"]], everything)
    assert calls["sisa-from-base"] == []  # no base to branch from
    epochs = cfg.train.expert.max_epochs
    seen = {m: total_bytes_seen(c) for m, c in calls.items() if c}
    assert set(seen.values()) == {epochs * sum(len(r.text.encode()) for r in everything)}


def test_with_base_sources_the_base_trains_first_and_the_baselines_see_its_records_too():
    cfg = load_config(None, ["train.base.max_epochs=3"])  # the experts' epochs: every model the same bytes
    train = corpus(["g", "a", "h", "b"])
    base = ("g", "h")
    everything = [r for records in train.values() for r in records]
    calls = {m: jobs(m, cfg, 4e-3, train, base) for m in METHODS}
    trunk, *experts = calls["ours"]
    assert trunk[1] == BASE and ids(trunk[2]) == ids(train["g"] + train["h"])
    assert trunk[0].train.base.lr == 4e-3 and trunk[0].train.expert.lr == 4e-3
    assert [(name, ids(records)) for _, name, records in experts] == [("a", ids(train["a"])), ("b", ids(train["b"]))]
    one, routing = expert_params(cfg.model.expert), router_params(cfg, 2, has_base=True)
    d, h = feature_size(cfg.model.expert.d_model), cfg.model.router.hidden  # features=auto with a base:
    assert routing == 2 * d + d * h + h + h * 2 + 2  # a head on the base's features (LayerNorm, MLP, 2 outputs)
    # the whole mixture: base + 2 experts; active: keep 2 candidates, and the base the router reads
    for method, models in (("dense-matched", 3), ("dense-active", 3)):
        ((dense_cfg, name, records),) = calls[method]
        assert name == method and records == everything
        assert expert_params(dense_cfg.model.expert) == pytest.approx(models * one + routing, rel=0.1)
    on_bytes = load_config(None, ["model.router.features=bytes"])
    ((dense_cfg, _, _),) = jobs("dense-active", on_bytes, 4e-3, train, base)
    assert expert_params(dense_cfg.model.expert) == pytest.approx(2 * one + router_params(on_bytes, 2), rel=0.1)
    check_partition([records for _, _, records in calls["sisa"]], everything)  # K = 2 shards of everything
    assert len(calls["sisa"]) == 2
    from_base = calls["sisa-from-base"]
    assert from_base[0] == trunk  # the same base as ours (so ours' tensors can be reused)
    shards = [records for _, _, records in from_base[1:]]
    check_partition(shards, train["a"] + train["b"])
    assert all(ids(mine) <= ids(plain) for mine, (_, _, plain) in zip(shards, calls["sisa"], strict=True))
    seen = {m: total_bytes_seen(c) for m, c in calls.items()}
    assert set(seen.values()) == {cfg.train.expert.max_epochs * sum(len(r.text.encode()) for r in everything)}


def test_with_step_limits_a_dense_model_gets_all_of_ours_steps_and_each_sisa_model_its_share():
    cfg = load_config(None, ["train.expert.max_steps=3", "train.base.max_steps=5"])
    train, base = corpus(["g", "a", "b"]), ("g",)
    calls = {m: jobs(m, cfg, 2e-3, train, base) for m in METHODS}
    assert [len(batch_bytes(*call)) for call in calls["ours"]] == [5, 3, 3]
    ((dense_cfg, _, _),) = calls["dense-matched"]
    assert dense_cfg.train.expert.max_steps == 11 and len(batch_bytes(*calls["dense-matched"][0])) == 11
    assert [c.train.expert.max_steps for c, _, _ in calls["sisa"]] == [math.ceil(11 / 2)] * 2
    assert calls["sisa-from-base"][0][0].train.base.max_steps == 5  # the base as ours trains it
    assert [c.train.expert.max_steps for c, _, _ in calls["sisa-from-base"][1:]] == [3, 3]  # ours' experts' steps
    unlimited = cfg.train.base.max_epochs * sum(len(r.text.encode()) for r in train["g"])
    assert bytes_seen(*calls["ours"][0]) == sum(batch_bytes(*calls["ours"][0])) < unlimited  # 5 steps only


def test_when_the_base_and_the_experts_train_different_epochs_the_baselines_see_ours_bytes():
    cfg = load_config(None, ["train.base.max_epochs=1", "train.expert.max_epochs=3"])
    train, base = corpus(["g", "a", "b"]), ("g",)
    calls = {m: jobs(m, cfg, 2e-3, train, base) for m in METHODS}
    everything = sum(len(r.text.encode()) for records in train.values() for r in records)
    ours = total_bytes_seen(calls["ours"])
    assert ours == (1 * 1 + 3 * 2) * everything // 3  # g, a and b hold a third of the bytes each
    ((dense_cfg, _, _),) = calls["dense-matched"]
    last = batch_bytes(*calls["dense-matched"][0])[-1]
    assert ours <= total_bytes_seen(calls["dense-matched"]) < ours + last  # up to the batch that reaches them
    assert dense_cfg.train.expert.max_epochs >= 3  # 7/3 passes over all the records: as many epochs as it takes
    for _, _, part in calls["sisa"]:  # each SISA model: half of ours' bytes, on its shard
        assert sum(bytes_seen(*c) for c in calls["sisa"] if c[2] is part) >= ours / 2
    assert total_bytes_seen(calls["sisa"]) < ours + 2 * max(batch_bytes(*c)[-1] for c in calls["sisa"])


def test_active_models_counts_what_one_byte_runs_through():
    posterior, router = MixingConfig(rule="posterior", keep=2), MixingConfig(rule="router")
    assert active_models(posterior, 2, n_experts=4, has_base=True, router_reads_base=False) == 2
    assert active_models(posterior, 2, n_experts=4, has_base=True, router_reads_base=True) == 3  # + the base
    assert active_models(posterior, 2, n_experts=1, has_base=True, router_reads_base=True) == 2  # all candidates
    assert active_models(MixingConfig(rule="posterior", keep=2, threshold=0.0), 2, 4, True, False) == 5  # never prunes
    assert active_models(router, 2, n_experts=1, has_base=True, router_reads_base=False) == 1
    assert active_models(router, 2, n_experts=4, has_base=True, router_reads_base=True) == 3


def test_the_mixture_pools_the_expert_sources_and_all_pools_every_source():
    records = {"a": [Record("a-1", "a", "xx")], "b": [Record("b-1", "b", "yyyyyy")], "g": [Record("g-1", "g", "zz")]}
    out = pooled({"a": 1.0, "b": 2.0, "g": 4.0}, records, base=("g",))
    assert out["mixture_bpb"] == pytest.approx((2 * 1 + 6 * 2) / 8)
    assert out["all_bpb"] == pytest.approx((2 * 1 + 6 * 2 + 2 * 4) / 10)
    assert pooled({"a": 1.0, "b": 2.0, "g": 4.0}, records)["mixture_bpb"] == pytest.approx(out["all_bpb"])


def rows(ours: float, dense: float, sisa: float, from_base: float | None = None) -> list[dict]:
    out = [
        {"model": "ours (posterior, keep 2)", "mixture_bpb": ours, "headline": True},
        {"model": "ours, router top-2", "mixture_bpb": ours / 2},  # not the headline: never compared
        {"model": "dense-matched", "mixture_bpb": dense},
        {"model": "sisa", "mixture_bpb": sisa},
    ]
    return out + ([{"model": "sisa from base", "mixture_bpb": from_base}] if from_base is not None else [])


def test_targets_ours_within_ten_percent_of_dense_matched_and_ten_percent_better_than_sisa():
    met = {t["target"].split()[-1]: t["met"] for t in targets(rows(1.09, 1.0, 1.22))}  # -10.7% against sisa
    assert met == {"dense-matched": True, "sisa": True}
    met = {t["target"].split()[-1]: t["met"] for t in targets(rows(1.11, 1.0, 1.2))}
    assert met == {"dense-matched": False, "sisa": False}  # +11%; 1.11 / 1.2 = 0.925
    listed = targets(rows(1.0, 1.0, 2.0, from_base=0.9))
    beside = listed[-1]
    assert "against sisa from base" in beside["target"] and beside["met"] is None and beside["bound"] is None
    assert beside["change"] == pytest.approx(1.0 / 0.9 - 1)
    assert [t["bound"] for t in listed] == [1.10, 0.9, None]
    assert targets([r for r in rows(1.0, 1.0, 2.0) if not r.get("headline")]) == []  # ours not run


def test_the_table_puts_base_sources_last_and_adds_the_all_column():
    row = {
        "lr": 2e-3,
        "validation_mixture_bpb": {},
        "params": 10,
        "active_params": 5,
        "bytes_seen": 100,
        "train_seconds": 1.0,
        "heldout_bpb": {"g": 3.0, "a": 1.0},
        "mixture_bpb": 1.0,
        "all_bpb": 2.0,
    }
    report = {
        "machine": {"cpu": "cpu", "cores": 2, "cuda": None, "torch": "2", "threads": 2},
        "date": "2026-12-03T00:00:00+00:00",
        "config_file": "configs/default.yaml",
        "overrides": [],
        "command": "python -m bench.utility",
        "quick": True,
        "lrs": [],
        "val_fraction": 0.1,
        "config": {
            **dict.fromkeys(("n_layer", "d_model", "block_size", "max_epochs", "max_steps", "batch_size"), 1),
            **{"domains": 2, "corpus": "built-in", "base_sources": ["g"], "base_records": 5, "train_records": 9},
            **{"test_records": 2, "base_max_epochs": 2, "base_max_steps": -1, "frozen": [], "mixing": "posterior"},
        },
        "rows": [{**row, "model": "ours", "headline": True}, {**row, "model": "sisa", "mixture_bpb": 2.0}],
        "targets": targets([{**row, "model": "ours", "headline": True}, {**row, "model": "sisa", "mixture_bpb": 2.0}]),
    }
    table = markdown(report)
    assert "| a | g (base) | mixture | all | vs ours |" in table
    assert "| 1.0000 | 3.0000 | **1.0000** | 2.0000 | +0.0% |" in table
    assert "| **2.0000** | 2.0000 | +100.0% |" in table
