"""bench.scaling's arithmetic on hand-made manifests: seconds by kind, the full references, a forget's split,
the per-K summary and the targets (no training, no measured seconds)."""

from bench.scaling import (
    agreement,
    crossover,
    forget_split,
    full_costs,
    markdown,
    seconds_by_kind,
    summarise,
    summarise_agreement,
    target_cell,
    target_check,
    targets_line,
)


def entry(kind: str | None, seconds: float | None, version: int = 1) -> dict:
    e = {"sha256": "0" * 64, "trained_in_version": version}
    if kind is not None:
        e["kind"] = kind
    if seconds is not None:
        e["train_seconds"] = seconds
    return e


def scratch_manifest() -> dict:
    """A from-scratch build of K = 2 with a base: paths named unlike the kinds, so a prefix rule would fail."""
    files = {
        "base.safetensors": entry("base", 40.0),
        "experts/a.safetensors": entry("expert", 10.0),
        "experts/b.safetensors": entry("expert", 12.0),
        "router/features/a.safetensors": entry("router-features", 1.5),
        "router/features/b.safetensors": entry("router-features", 2.5),
        "router/stage_0.safetensors": entry("router-stage", 0.75),
        "router/stage_1.safetensors": entry("router-stage", 1.25),
    }
    return {"files": files, "trained": list(files)}


def test_seconds_are_summed_by_kind_not_by_path():
    s = seconds_by_kind(scratch_manifest())
    assert s == {"base": 40.0, "expert": 22.0, "router-features": 4.0, "router-stage": 2.0}
    only = seconds_by_kind(scratch_manifest(), ["router/features/a.safetensors", "router/stage_1.safetensors"])
    assert only == {"base": 0.0, "expert": 0.0, "router-features": 1.5, "router-stage": 1.25}


def test_entries_without_kind_or_seconds_are_kept_apart_or_zero():
    manifest = {"files": {"x": entry(None, 3.0), "y": entry("expert", None)}, "trained": ["x", "y"]}
    s = seconds_by_kind(manifest)
    assert s["unknown"] == 3.0 and s["expert"] == 0.0


def test_full_retrain_keeps_the_base_and_its_features_and_full_rebuild_adds_them():
    full = full_costs(scratch_manifest())
    assert full["full_retrain_s"] == 24.0  # 22 experts + 2 router stages
    assert full["full_rebuild_s"] == 68.0
    assert (full["full_expert_s"], full["full_features_s"], full["full_router_s"], full["full_base_s"]) == (
        22.0,
        4.0,
        2.0,
        40.0,
    )


def test_a_forget_is_split_by_the_kinds_of_the_files_its_build_trained():
    files = scratch_manifest()["files"]  # version 1's files, linked into version 2 ...
    files["experts/a.safetensors"] = entry("expert", 5.0, version=2)  # ... but for those it retrained
    files["router/features/a.safetensors"] = entry("router-features", 0.5, version=2)
    files["router/stage_0.safetensors"] = entry("router-stage", 0.5, version=2)
    files["router/stage_1.safetensors"] = entry("router-stage", 1.0, version=2)
    trained = [p for p, e in files.items() if e["trained_in_version"] == 2]
    split = forget_split(8.0, {"files": files, "trained": trained})
    assert split == {
        "forget_s": 8.0,
        "expert_s": 5.0,
        "features_s": 0.5,
        "router_s": 1.5,
        "rest_s": 1.0,
        "router_stages_rerun": 2,
    }


def test_a_forget_that_trained_the_base_says_so_and_keeps_it_out_of_the_rest():
    manifest = scratch_manifest()
    split = forget_split(80.0, manifest)
    assert split["base_s"] == 40.0 and split["rest_s"] == 80.0 - 68.0
    odd = {"files": {"x": entry("something-new", 2.0)}, "trained": ["x"]}
    assert forget_split(3.0, odd)["other_s"] == 2.0 and forget_split(3.0, odd)["rest_s"] == 1.0


def test_targets_hold_only_at_k_4_8_16_and_need_both_mean_and_worst():
    assert target_check(2, 0.1, 0.1) is None
    assert target_check(4, 0.8, 0.5) == {"mean": True, "worst": True, "pass": True}
    assert target_check(8, 0.79, 0.9) == {"mean": False, "worst": True, "pass": False}
    assert target_check(16, 1.0, 0.49) == {"mean": True, "worst": False, "pass": False}
    assert target_cell(None) == "-" and target_cell(target_check(4, 0.9, 0.6)) == "pass"
    assert target_cell(target_check(4, 0.5, 0.4)) == "FAIL (mean and worst)"


def forgets(*walls: float) -> list[dict]:
    return [{"source": f"s{i}", "forget_s": w, "expert_s": 1.0, "router_s": 0.5} for i, w in enumerate(walls)]


def test_the_summary_is_the_mean_of_the_per_source_speedups_and_the_worst_source():
    full = {"full_retrain_s": 40.0, "full_rebuild_s": 80.0}
    per_source = forgets(10.0, 5.0, 20.0, 8.0)  # speedups 4, 8, 2, 5
    s = summarise(4, full, per_source)
    assert s["mean_speedup"] == 4.75  # the mean of the ratios, not 40 / mean(forget) = 3.48
    assert s["worst_speedup"] == 2.0 and s["worst_source"] == "s2"
    assert s["mean_speedup_k"] == round(4.75 / 4, 3) and s["worst_speedup_k"] == 0.5
    assert s["mean_speedup_rebuild"] == 9.5 and s["worst_speedup_rebuild"] == 4.0
    assert s["mean_forget_s"] == 10.75
    assert s["target"] == {"mean": True, "worst": True, "pass": True}  # 1.19K and exactly 0.5K
    assert [f["speedup"] for f in per_source] == [4.0, 8.0, 2.0, 5.0]
    assert [f["speedup_rebuild"] for f in per_source] == [8.0, 16.0, 4.0, 10.0]
    assert summarise(4, full, forgets(10.0, 30.0))["target"]["pass"] is False  # worst 1.33 < 0.5 x 4


def result(k: int, target: dict | None, walls: tuple[float, ...]) -> dict:
    full = {"full_retrain_s": 10.0 * k, "full_rebuild_s": 20.0 * k}
    per_source = [{**f, "stage": i} for i, f in enumerate(forgets(*walls))]
    for f in per_source:
        f |= {"features_s": 0.1, "rest_s": 0.2, "router_stages_rerun": 1}
    row = {"k": k, "records_per_domain": 100, **full, "full_expert_s": 8.0 * k, "full_features_s": k * 1.0}
    row |= {"full_router_s": k * 1.0, "full_base_s": 10.0 * k, **summarise(k, full, per_source), "forgets": per_source}
    row["router_over_expert"] = 0.5
    for f in per_source:
        f["agreement"] = {"16B": 0.9, "32B": 0.95, "64B": 1.0}
    row |= {"agreement_prefixes": 50 * k, "agreement": summarise_agreement(per_source)}
    return {**row, "target": target} if target is not None else row


def test_the_targets_line_names_each_checked_k_and_the_unmeasured_ones():
    results = [result(2, None, (2.0, 2.0)), result(4, None, (4.0,) * 4)]
    line = targets_line(results)
    assert "FAIL" not in line and "K = 4 pass" in line and "K = 8, 16 not measured" in line
    failing = [result(4, {"mean": False, "worst": True, "pass": False}, (4.0,) * 4)]
    assert targets_line(failing).split(": ")[1] == "FAIL"
    assert "K = 4 FAIL (mean)" in targets_line(failing)
    assert "no K of 4, 8, 16 measured" in targets_line([result(2, None, (2.0, 2.0))])


def test_the_markdown_has_a_row_per_k_and_per_source_and_the_verdicts():
    results = [result(2, None, (2.0, 4.0)), result(4, None, (4.0,) * 4)]
    report = {
        "machine": {"cpu": "CPU", "cores": 2, "cuda": None, "torch": "2", "threads": 2},
        "date": "2026-01-01T00:00:00+00:00",
        "config_file": "configs/default.yaml",
        "overrides": [],
        "corpus": "built-in corpus",
        "base": "base: 20 more records of each domain",
        "total": 200,
        "records": 10,
        "agreement_records": 50,
        "command": "python -m bench.scaling",
        "results": results,
        "crossover": crossover(results),
    }
    text = markdown(report)
    assert "| 2 | 100 | 20.0 (16.0 + 2.0) | 40.0 (+ 2.0 + 20.0) |" in text
    assert "| 7.50x (3.75K) | 5.00x (2.50K, s1) | 15.00x | - |" in text  # speedups 10 and 5 at K = 2
    assert "| 4 | 100 | 40.0 (32.0 + 4.0) |" in text and "| pass |" in text
    assert (
        sum(line.startswith(("| 2 | 0 |", "| 2 | 1 |", "| 4 |")) for line in text.splitlines()) == 2 + 1 + 4 + 1
    )  # + agreement
    assert "Targets (mean >= 0.8K and worst >= 0.5K at K = 4, 8, 16): pass" in text
    assert "Router replay does not exceed expert retraining" in text
    assert "| 4 | 200 | 90.0% (90.0%) | 95.0% (95.0%) | 100.0% (100.0%) | pass |" in text


def test_agreement_is_the_share_of_equal_top1_experts_per_prefix_length():
    before = {16: ["a", "b", "a", "b"], 64: ["a", "a", "b", "b"]}
    after = {16: ["a", "a", "a", "a"], 64: ["a", "a", "b", "b"]}
    assert agreement(before, after) == {"16B": 0.5, "64B": 1.0}


def test_the_agreement_target_needs_every_forget_at_99_percent_at_the_longest_prefix():
    forgets = [{"agreement": {"16B": 0.5, "64B": 1.0}}, {"agreement": {"16B": 0.7, "64B": 0.995}}]
    s = summarise_agreement(forgets)
    assert s["16B"] == {"mean": 0.6, "worst": 0.5} and s["64B"]["worst"] == 0.995
    assert s["pass"] is True  # 16 bytes are reported, not judged
    forgets.append({"agreement": {"16B": 1.0, "64B": 0.98}})
    assert summarise_agreement(forgets)["pass"] is False
