"""Benchmark: the forget speedup of every source as the number of experts K grows (not a test).

For each K (2, 4, 8, 16 by default) it trains the default config with K built-in domains, one expert each,
on the same total data (records_per_domain = --total // K: 8,000 records in all by default) plus a base
(--base-records, default 2,000 in all, --quick a quarter of --total: split over the K domains, so the base
is the same size at any K, in one base source `public` via data.corpus.base_records; the base trains
first, the experts start from its weights and the router is a head on frozen base features). Then, on that
one run directory, it forgets --records (10) trained-on records of every expert source in turn, in
router-stage order: K forgets, each building on the version the previous one left (each retrains only its own
expert, its features file and the router stages
from its own on, so the order changes no figure but the version number). Per source, the forget's wall
time (the whole `Run.forget` call) is split by the `kind` of the files its build trained (the new
manifest's `trained` entries and their train_seconds):

- expert: the source's expert, retrained from the base;
- features: its router-features file (rows copied from the served file, none computed);
- router: the router stages it re-ran (the source's own stage and every later one);
- rest: loading, planning, switch, scrub and certificate.

Against two references from the from-scratch build's manifest (training seconds only, no overheads):

- full retrain: every expert and every router stage, the base (and so the base features, a function of
  the base and the records) kept: the issue's reference;
- full rebuild: that plus the base's training and the features, what a forget of a base record costs.

Per K it reports the mean over sources of the speedup (full retrain / forget), the worst source's, both as a
multiple of K, and the mean speedup against the full rebuild, and checks the targets at K = 4, 8 and 16:
mean >= 0.8K and worst >= 0.5K (pass/FAIL). An ideal forget (one expert of K, nothing else) would reach
about K; the router stages a forget of an early source re-runs and the fixed rest pull it below. It also
keeps the earlier question, where router replay overtakes expert retraining, on the stage-0 source's
forget (the one that re-runs every stage). Writes JSON, Markdown and a PNG (mean and worst speedup against
K with the 0.8K and 0.5K lines; the mean forget split by kind).

    .venv/bin/python -m bench.scaling                        # K = 2 4 8 16, 8,000 records: ~30 min (estimate)
    .venv/bin/python -m bench.scaling --quick                # 800 records (base 500 a domain): ~10 min (estimate)
    .venv/bin/python -m bench.scaling --base-records 0       # no base: byte router, the first design
    .venv/bin/python -m bench.scaling --quick --k 2 4 --total 200 --base-records 20   # smoke test
    .venv/bin/python -m bench.scaling --quick --data data/dictd      # dictd: K = 2 3 4 5 dictionaries, no base

With --data (the --out folder of `moe-unlearn data prepare dictd`) the K domains are the first K of Debian's
five dictd dictionaries (so K <= 5), each contributing a seeded random sample of --total // K of its
entries (2,500 in all by default: devil's 999 entries cap a share), trained by the default config's epochs
like the built-in domains (not dictd.yaml's fixed step budget, which would not hold the total data fixed).
There is no base there (dictd has no public share to train one on; --base-records is refused): the full
rebuild equals the full retrain and the router is the byte router.

Time: the smoke test above (K = 2 and 4, 200 records, base 20 a domain: 6 forgets) took 6 min 32 s wall on
an AMD EPYC (lscpu: 2 cores, AVX-512, KVM guest), on cores other jobs shared, so its seconds say nothing by
themselves. The other figures are estimates, not measurements, from docs/BENCHMARKS.md (without a base:
~110 s of expert training per K at 8,000 records, ~60 s for a forget at K = 2 down to ~8 s of expert at
K = 16): per K one training (~2 min of experts, the base on 500 x K records, the features) and K forgets
that together retrain about one expert's worth of data each (~2 min), so ~4 x 5 min plus base training;
--quick ~10 min, mostly the bases (500 records a domain whatever the total). Config overrides apply to
every K; data.corpus.domains, data.corpus.records_per_domain and data.corpus.base_records are set per K.
"""

import argparse
import json
import math
import shutil
import tempfile
from itertools import pairwise
from pathlib import Path
from statistics import mean

import torch
from rich.console import Console
from rich.table import Table

from bench.common import machine_line, provenance, publish, report_defaults, report_options, save_figure, timed
from bench.utility import DICTD, corpus
from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.data.examples import BOS
from moe_unlearn.data.ingest import read_records
from moe_unlearn.data.splits import is_heldout, unit_hash
from moe_unlearn.models.loading import load_version
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.rundir import read_current, read_manifest, version_dir

QUICK_TOTAL = 800
DEFAULT_K = [2, 4, 8, 16]
DEFAULT_BASE_RECORDS = 2000  # in all, split over the K domains; built-in corpus only
DICTD_TOTAL = 2500  # devil, the third dictionary, has 999 entries: K = 3 takes 833 of each
# Reporting only (not timed): the held-out evaluation `train` runs after training, kept small.
FIXED = ["trainer.progress_bar=false", "data.eval_records=10"]
KINDS = ("base", "expert", "router-features", "router-stage")  # manifest entries' `kind`
TARGET_K = (4, 8, 16)
MEAN_TARGET, WORST_TARGET = 0.8, 0.5  # x K
AGREEMENT_PREFIXES = (16, 32, 64)  # bytes; 64 is the audit's router prefix
AGREEMENT_TARGET = 0.99  # top-1 agreement of the routers before and after a forget, at 64 bytes


def seconds_by_kind(manifest: dict, paths: list[str] | None = None) -> dict[str, float]:
    """Training seconds of the manifest's `paths` (default: every file) by their entry's `kind`: every kind
    of KINDS (0.0 when none), plus "unknown" for entries without one (none expected)."""
    files = manifest["files"]
    out = dict.fromkeys(KINDS, 0.0)
    for p in files if paths is None else paths:
        kind = files[p].get("kind") or "unknown"
        out[kind] = out.get(kind, 0.0) + files[p].get("train_seconds", 0.0)
    return out


def count_kind(manifest: dict, paths: list[str], kind: str) -> int:
    return sum(manifest["files"][p].get("kind") == kind for p in paths)


def full_costs(manifest: dict) -> dict:
    """The from-scratch build's training seconds: full retrain (every expert and router stage; the base, and
    so the base features, kept) and full rebuild (that plus the base and the features), with their parts."""
    s = seconds_by_kind(manifest)
    retrain = s["expert"] + s["router-stage"]
    return {
        "full_retrain_s": round(retrain, 2),
        "full_rebuild_s": round(retrain + s["router-features"] + s["base"], 2),
        "full_expert_s": round(s["expert"], 2),
        "full_features_s": round(s["router-features"], 2),
        "full_router_s": round(s["router-stage"], 2),
        "full_base_s": round(s["base"], 2),
    }


def forget_split(wall: float, manifest: dict) -> dict:
    """A forget's wall time split by the kind of the files its build trained (`manifest`: the new version's),
    the rest being everything else the call did. base_s and other_s (kinds a forget of an expert source
    should not train) are kept in the split, and so out of the rest, when not zero."""
    trained = manifest["trained"]
    s = seconds_by_kind(manifest, trained)
    other = sum(v for k, v in s.items() if k not in KINDS)
    split = {
        "forget_s": round(wall, 2),
        "expert_s": round(s["expert"], 2),
        "features_s": round(s["router-features"], 2),
        "router_s": round(s["router-stage"], 2),
        "rest_s": round(wall - sum(s.values()), 2),
        "router_stages_rerun": count_kind(manifest, trained, "router-stage"),
    }
    split |= {"base_s": round(s["base"], 2)} if s["base"] else {}
    split |= {"other_s": round(other, 2)} if other else {}
    return split


def target_check(k: int, mean_k: float, worst_k: float) -> dict | None:
    """Whether the mean and worst speedup (as multiples of K) meet the issue's targets; None where K has
    none (K not in TARGET_K)."""
    if k not in TARGET_K:
        return None
    ok_mean, ok_worst = mean_k >= MEAN_TARGET, worst_k >= WORST_TARGET
    return {"mean": ok_mean, "worst": ok_worst, "pass": ok_mean and ok_worst}


def summarise(k: int, full: dict, forgets: list[dict]) -> dict:
    """Per-K figures from `full` (`full_costs`) and the per-source forgets (`forget_split` + "source"): each
    forget gets its speedups, and the K its mean, worst and rebuild speedups and the target check."""
    for f in forgets:
        f["speedup"] = round(full["full_retrain_s"] / f["forget_s"], 2)
        f["speedup_rebuild"] = round(full["full_rebuild_s"] / f["forget_s"], 2)
    speedups = [full["full_retrain_s"] / f["forget_s"] for f in forgets]
    rebuild = [full["full_rebuild_s"] / f["forget_s"] for f in forgets]
    worst = min(range(len(forgets)), key=speedups.__getitem__)
    mean_s = mean(speedups)
    return {
        "mean_speedup": round(mean_s, 2),
        "worst_speedup": round(speedups[worst], 2),
        "worst_source": forgets[worst]["source"],
        "mean_speedup_k": round(mean_s / k, 3),
        "worst_speedup_k": round(speedups[worst] / k, 3),
        "mean_speedup_rebuild": round(mean(rebuild), 2),
        "worst_speedup_rebuild": round(min(rebuild), 2),
        "mean_forget_s": round(mean(f["forget_s"] for f in forgets), 2),
        "target": target_check(k, mean_s / k, speedups[worst] / k),
    }


def summarise_agreement(forgets: list[dict]) -> dict:
    """Mean and worst (over the K forgets) router top-1 agreement per prefix length, and the target's check
    (every forget at least AGREEMENT_TARGET at the longest prefix)."""
    keys = list(forgets[0]["agreement"])
    out = {
        k: {
            "mean": round(mean(f["agreement"][k] for f in forgets), 4),
            "worst": min(f["agreement"][k] for f in forgets),
        }
        for k in keys
    }
    out["pass"] = out[keys[-1]]["worst"] >= AGREEMENT_TARGET
    return out


def router_over_expert(forget: dict) -> float | None:
    return round(forget["router_s"] / forget["expert_s"], 3) if forget["expert_s"] else None


@torch.no_grad()
def top1_experts(model: MixtureOfExperts, texts: list[bytes]) -> dict[int, list[str]]:
    """The router's top-1 expert (by name) after the first n bytes of each text, for n in AGREEMENT_PREFIXES
    (texts at least max(AGREEMENT_PREFIXES) bytes long): one batched causal pass, the weights for byte n."""
    inputs = torch.tensor([[BOS, *t[: max(AGREEMENT_PREFIXES)]] for t in texts])
    top = model.router_logits(inputs).argmax(-1)  # (N, T): position n holds the weights after n bytes
    return {n: [model.names[i] for i in top[:, n].tolist()] for n in AGREEMENT_PREFIXES}


def agreement(before: dict[int, list[str]], after: dict[int, list[str]]) -> dict[str, float]:
    """Share of prefixes whose top-1 expert is the same before and after, per prefix length."""
    return {f"{n}B": round(sum(map(str.__eq__, before[n], after[n])) / len(before[n]), 4) for n in before}


def retained_prefixes(keep: dict[str, list], skip: int, n: int) -> list[bytes]:
    """Up to n training records of every source past the first `skip` (those the bench forgets), long enough
    for every prefix length: texts the forgets keep."""
    out = []
    for records in keep.values():
        texts = (r.text.encode("utf-8") for r in records[skip:])
        out += [t for t in texts if len(t) >= max(AGREEMENT_PREFIXES)][:n]
    return out


def dictd_sample(data: Path, k: int, total: int, seed: int, work: Path) -> dict[str, list]:
    """The first k dictionaries' share of `total` entries each, a seeded random sample, written to JSONL
    files in `work` for `ingest`: {source: records}."""
    sample = {}
    for name in DICTD[:k]:
        entries = sorted(read_records(data / f"{name}.jsonl", name), key=lambda r: unit_hash(seed, "scaling", r.id))
        sample[name] = entries[: total // k]
        with (work / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in sample[name])
    return sample


def k_overrides(k: int, args) -> list[str]:
    if args.data:
        return [*FIXED, "data.builtin=false", *args.overrides]
    # --base-records is the base's total, like --total: split over the K domains so the base is the same size at any K
    base = [f"data.corpus.base_records={args.base_records // k}"] if args.base_records else []
    base.append("data.corpus.base_domains=0")  # K up to 16 uses every built-in domain: the base is `public`
    return [
        *FIXED,
        *args.overrides,
        f"data.corpus.domains={k}",
        f"data.corpus.records_per_domain={args.total // k}",
        *base,
    ]


def bench_k(k: int, args, work: Path, console: Console) -> dict:
    overrides = k_overrides(k, args)
    run_dir = work / f"k{k}"
    run = Run(run_dir, console=console)
    per_domain = args.total // k
    if args.data:
        cfg = load_config(args.config, overrides)
        folder = work / f"k{k}-data"
        folder.mkdir()
        sample = dictd_sample(args.data, k, args.total, cfg.seed, folder)
        per_domain = min(len(records) for records in sample.values())
        if per_domain < args.total // k:
            console.print(f"[yellow]K = {k}: a dictionary has only {per_domain:,} entries: less than --total in all")
        run.init(args.config, overrides)
        for name in sample:
            run.ingest(name, [folder / f"{name}.jsonl"])
        keep = {
            s: [r for r in rs if not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)] for s, rs in sample.items()
        }
    else:
        keep = corpus(args.config, overrides)[0]
    console.print(f"[bold]K = {k}[/]: training ({per_domain:,} records per domain)")
    manifest, train_wall = timed(run.train, args.config, overrides)
    full = full_costs(manifest)
    prefixes = retained_prefixes(keep, args.records, args.agreement_records)
    routed = top1_experts(load_version(run_dir, read_current(run_dir))[0], prefixes)
    forgets = []
    for stage, expert in enumerate(manifest["experts"]):  # stage i is expert i's
        source = next(s for s, e in manifest["sources"].items() if e == expert)
        ids = [r.id for r in keep[source]][: args.records]
        console.print(f"[bold]K = {k}[/]: forgetting {len(ids)} records of {source} (stage {stage})")
        certificate, wall = timed(run.forget, records=ids)
        after = read_manifest(version_dir(run_dir, read_current(run_dir)))
        split = forget_split(wall, after)
        forgets.append({"stage": stage, "source": source, "records_forgotten": len(ids), **split})
        forgets[-1]["experts_retrained"] = certificate["retrained"]["experts"]
        forgets[-1]["full_rebuild"] = bool(certificate["retrained"].get("full_rebuild"))
        before, routed = routed, top1_experts(load_version(run_dir, read_current(run_dir))[0], prefixes)
        forgets[-1]["agreement"] = agreement(before, routed)
        console.print(
            f"  forget {split['forget_s']:.1f} s = expert {split['expert_s']:.1f} + features "
            f"{split['features_s']:.1f} + router {split['router_s']:.1f} ({split['router_stages_rerun']} stages) "
            f"+ rest {split['rest_s']:.1f}; router top-1 agreement {forgets[-1]['agreement']}"
        )
    shutil.rmtree(run_dir)
    return {
        "k": k,
        "records_per_domain": per_domain,
        "base_records_per_domain": 0 if args.data else args.base_records // k,
        "records_forgotten": args.records,
        **full,
        "train_command_wall_s": round(train_wall, 1),
        **summarise(k, full, forgets),
        "router_over_expert": router_over_expert(forgets[0]),  # the stage-0 source: every stage re-run
        "agreement_prefixes": len(prefixes),
        "agreement": summarise_agreement(forgets),
        "forgets": forgets,
    }


def crossover(results: list[dict]) -> dict:
    """The first K whose router replay exceeds its expert retraining, and where log(router / expert) crosses
    0 between measured K (linear in log K), or None when it does not in the range."""
    ratios = [(r["k"], r["router_over_expert"]) for r in results if r["router_over_expert"]]
    first = next((k for k, ratio in ratios if ratio > 1), None)
    estimate = None
    for (k0, r0), (k1, r1) in pairwise(ratios):
        if r0 <= 1 < r1:
            t = -math.log(r0) / (math.log(r1) - math.log(r0))
            estimate = round(math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0))), 1)
            break
    if first is not None and first == ratios[0][0]:
        estimate = None  # already dominant at the smallest K: no crossing inside the range
    return {"first_k": first, "interpolated_k": estimate}


def target_cell(target: dict | None) -> str:
    if target is None:
        return "-"
    if target["pass"]:
        return "pass"
    return "FAIL (" + " and ".join(name for name in ("mean", "worst") if not target[name]) + ")"


def targets_line(results: list[dict]) -> str:
    checked = [r for r in results if r["target"] is not None]
    head = f"Targets (mean >= {MEAN_TARGET}K and worst >= {WORST_TARGET}K at K = {', '.join(map(str, TARGET_K))})"
    if not checked:
        return f"{head}: no K of {', '.join(map(str, TARGET_K))} measured."
    cells = [f"K = {r['k']} {target_cell(r['target'])}" for r in checked]
    missing = [str(k) for k in TARGET_K if k not in {r["k"] for r in results}]
    verdict = "pass" if all(r["target"]["pass"] for r in checked) else "FAIL"
    return f"{head}: {verdict}: {'; '.join(cells)}" + (f" (K = {', '.join(missing)} not measured)" if missing else "")


def verdict(report: dict) -> str:
    c, ks = report["crossover"], [r["k"] for r in report["results"]]
    if c["first_k"] is None:
        return f"Router replay does not exceed expert retraining for K = {', '.join(map(str, ks))} (stage-0 forget)."
    if c["first_k"] == ks[0]:
        return (
            f"Router replay already exceeds expert retraining at the smallest K measured, K = {ks[0]} (stage-0 forget)."
        )
    where = f" (interpolated: K ~ {c['interpolated_k']})" if c["interpolated_k"] else ""
    return f"Router replay first exceeds expert retraining at K = {c['first_k']}{where} (stage-0 forget)."


def markdown(report: dict) -> str:
    base = report["base"]
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides']) or '(no overrides)'}`; "
        f"{report['corpus']}, {report['total']:,} records in all, split over K domains; {base}; "
        f"forget {report['records']} trained-on records of every source in turn (router-stage order, one run "
        "directory)",
        f"- Command: `{report['command']}`",
        "",
        "| K | records / domain | full retrain s (experts + router) | full rebuild s (+ features + base) "
        "| mean forget s | mean speedup | worst speedup (source) | mean vs full rebuild | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['k']} | {r['records_per_domain']:,} | {r['full_retrain_s']:.1f} ({r['full_expert_s']:.1f} + "
            f"{r['full_router_s']:.1f}) | {r['full_rebuild_s']:.1f} "
            f"(+ {r['full_features_s']:.1f} + {r['full_base_s']:.1f}) | {r['mean_forget_s']:.1f} | "
            f"{r['mean_speedup']:.2f}x "
            f"({r['mean_speedup_k']:.2f}K) | {r['worst_speedup']:.2f}x ({r['worst_speedup_k']:.2f}K, "
            f"{r['worst_source']}) | {r['mean_speedup_rebuild']:.2f}x | {target_cell(r['target'])} |"
        )
    lines += [
        "",
        targets_line(report["results"]),
        "",
        "| K | stage | source | forget s | expert s | features s | router s (stages) | rest s | speedup "
        "| vs full rebuild |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        for f in r["forgets"]:
            lines.append(
                f"| {r['k']} | {f['stage']} | {f['source']} | {f['forget_s']:.1f} | {f['expert_s']:.1f} | "
                f"{f['features_s']:.1f} | {f['router_s']:.1f} ({f['router_stages_rerun']}) | {f['rest_s']:.1f} | "
                f"{f['speedup']:.2f}x | {f['speedup_rebuild']:.2f}x |"
            )
    lines += [
        "",
        f"Router top-1 agreement before and after each forget, on the prefixes of retained training records "
        f"(up to {report['agreement_records']} a source): mean over the K forgets (worst); target: every forget "
        f"at least {AGREEMENT_TARGET:.0%} at {max(AGREEMENT_PREFIXES)} bytes.",
        "",
        "| K | prefixes | " + " | ".join(f"{n} B" for n in AGREEMENT_PREFIXES) + " | target |",
        "|---|---|" + "---|" * len(AGREEMENT_PREFIXES) + "---|",
    ]
    for r in report["results"]:
        a = r["agreement"]
        cells = " | ".join(f"{a[f'{n}B']['mean']:.1%} ({a[f'{n}B']['worst']:.1%})" for n in AGREEMENT_PREFIXES)
        lines.append(f"| {r['k']} | {r['agreement_prefixes']:,} | {cells} | {'pass' if a['pass'] else 'FAIL'} |")
    lines += [
        "",
        verdict(report),
        "",
        "Full retrain: the training seconds alone of the from-scratch build's experts and router stages (its "
        "manifest's train_seconds; the base and its features kept); full rebuild adds the features and the base. "
        "Forget: the wall time "
        "of the whole `forget` call; expert, features and router are the train_seconds of the files its build "
        "trained, by kind; the rest is loading, planning, switch, scrub and certificate. Speedup: full retrain / "
        "forget, per source; mean and worst over the K sources, also as a multiple of K.",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    results = report["results"]
    ks = [r["k"] for r in results]
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    speed, stacked = figure.subplots(1, 2)
    line_k = [ks[0] / 1.2, ks[-1] * 1.2]
    speed.plot(line_k, [k for k in line_k], color="lightgray", label="K (one expert of K, nothing else)")
    speed.plot(
        line_k, [MEAN_TARGET * k for k in line_k], "--", color="tab:green", label=f"{MEAN_TARGET}K (mean target)"
    )
    speed.plot(
        line_k, [WORST_TARGET * k for k in line_k], ":", color="tab:red", label=f"{WORST_TARGET}K (worst target)"
    )
    speed.plot(ks, [r["mean_speedup"] for r in results], "o-", color="tab:blue", label="mean over sources")
    speed.plot(ks, [r["worst_speedup"] for r in results], "s-", color="tab:orange", label="worst source")
    speed.plot(
        ks, [r["mean_speedup_rebuild"] for r in results], "^--", color="tab:purple", label="mean, vs full rebuild"
    )
    for axis in (speed.set_xscale, speed.set_yscale):
        axis("log", base=2)
    speed.set_xticks(ks, [str(k) for k in ks])
    speed.xaxis.set_minor_formatter(NullFormatter())
    speed.yaxis.set_major_formatter(ScalarFormatter())
    speed.yaxis.set_minor_formatter(NullFormatter())
    speed.set_xlabel("K (experts), same total data")
    speed.set_ylabel("speedup, full retrain / forget (log scale)")
    speed.set_title("Forget speedup against K")
    speed.legend(fontsize="small")
    parts = {"expert_s": "expert", "features_s": "features", "router_s": "router stages", "rest_s": "rest"}
    bottom = [0.0] * len(ks)
    for key, label in parts.items():
        values = [max(mean(f[key] for f in r["forgets"]), 0.0) for r in results]
        stacked.bar(range(len(ks)), values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    stacked.set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
    stacked.set_ylabel("seconds")
    stacked.set_title("Mean forget over sources, split by what it spends time on")
    stacked.legend()
    figure.suptitle(f"Scaling: {report['total']:,} records over K domains; {report['base']} ({report['date'][:10]})")
    save_figure(figure, path)


def console_table(results: list[dict]) -> Table:
    table = Table(
        "K",
        "full retrain s",
        "full rebuild s",
        "mean forget s",
        "mean speedup",
        "worst (source)",
        "vs rebuild",
        "target",
    )
    for r in results:
        table.add_row(
            str(r["k"]),
            f"{r['full_retrain_s']:.1f}",
            f"{r['full_rebuild_s']:.1f}",
            f"{r['mean_forget_s']:.1f}",
            f"{r['mean_speedup']:.2f}x ({r['mean_speedup_k']:.2f}K)",
            f"{r['worst_speedup']:.2f}x ({r['worst_speedup_k']:.2f}K, {r['worst_source']})",
            f"{r['mean_speedup_rebuild']:.2f}x",
            target_cell(r["target"]),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"--total {QUICK_TOTAL} unless --total is given")
    parser.add_argument("--k", type=int, nargs="+", default=DEFAULT_K, help="numbers of experts (<= 16)")
    parser.add_argument(
        "--total", type=int, help="records in all, split evenly over the K domains (default 8000; dictd 2500)"
    )
    parser.add_argument("--records", type=int, default=10, help="trained-on records to forget from each source")
    parser.add_argument(
        "--agreement-records",
        type=int,
        default=50,
        help="retained training records a source whose prefixes the routers before and after each forget route",
    )
    parser.add_argument(
        "--base-records",
        type=int,
        help=f"base records in all, split over the K domains, source `public` (default {DEFAULT_BASE_RECORDS}, "
        "--quick a quarter of --total; 0: no base; built-in only)",
    )
    report_options(parser, "scaling", "the first K dictionaries as domains (K <= 5, default 2 3 4 5), no base")
    parser.add_argument("overrides", nargs="*", help="config overrides for every K, e.g. model.expert.d_model=64")
    args = parser.parse_args()
    console = Console(stderr=True)
    suffix = report_defaults(args, "scaling", dictd_config=False)  # not dictd.yaml: see the docstring
    args.total = args.total or (QUICK_TOTAL if args.quick else DICTD_TOTAL if args.data else 8000)
    if args.data and args.base_records:
        parser.error("--base-records is for the built-in corpus: a dictd run has no base")
    if args.base_records is not None and args.base_records < 0:
        parser.error("--base-records must be 0 or more")
    default_base = args.total // 4 if args.quick else DEFAULT_BASE_RECORDS
    args.base_records = 0 if args.data else default_base if args.base_records is None else args.base_records
    if args.data and args.k == DEFAULT_K:
        args.k = [2, 3, 4, 5]
    most = len(DICTD) if args.data else 16
    if max(args.k) > most or min(args.k) < 1:
        parser.error(f"K must be 1..{most} (the {'dictd dictionaries' if args.data else 'built-in domains'})")
    results = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-scaling-") as tmp:
        for k in sorted(args.k):
            results.append(bench_k(k, args, Path(tmp), console))
            r = results[-1]
            console.print(
                f"K = {k}: full retrain {r['full_retrain_s']:.1f} s, full rebuild {r['full_rebuild_s']:.1f} s; "
                f"mean speedup {r['mean_speedup']:.2f}x ({r['mean_speedup_k']:.2f}K), worst {r['worst_speedup']:.2f}x "
                f"({r['worst_speedup_k']:.2f}K, {r['worst_source']}); target {target_cell(r['target'])}"
            )
    if args.data:
        base = "no base (dictd), byte router"
    elif args.base_records:
        base = (
            f"base: {args.base_records:,} more records in all (split over the K domains) in source `public`, "
            "router on base features"
        )
    else:
        base = "no base, byte router"
    report = {
        **provenance(args.config),
        "overrides": [*FIXED, *(["data.builtin=false"] if args.data else []), *args.overrides],
        "corpus": f"dictd corpus ({args.data}), the first K dictionaries" if args.data else "built-in corpus",
        "base": base,
        "quick": args.quick,
        "total": args.total,
        "base_records": args.base_records,
        "records": args.records,
        "agreement_records": args.agreement_records,
        "targets": {"k": list(TARGET_K), "mean_k": MEAN_TARGET, "worst_k": WORST_TARGET},
        "results": results,
        "crossover": crossover(results),
    }
    console.print(console_table(results))
    console.print(f"[bold]{targets_line(results)}[/]")
    console.print(verdict(report))
    publish(report, markdown(report), args.out, plot, args.plots / f"scaling{suffix}.png", console)


if __name__ == "__main__":
    main()
