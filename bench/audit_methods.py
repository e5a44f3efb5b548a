"""Benchmark: the audit of exact forgetting beside the approximate methods (not a test).

Trains the audit config (configs/experiment/audit.yaml: the default model with canaries, secrets of a
fixed format each inserted at most 10 times, trained long enough to memorise them), then, on three
copies of the trained run directory, forgets every copy of every canary with `--audit` by the exact
method, gradient ascent and nabla-tau, runs `verify` on the exact one (it must equal the oracle) and
writes each request's audit report.
privleak of the approximate methods uses the exact forget's after-model as the oracle (it is
bit-identical to retraining from scratch). Prints a Markdown table; raw figures go to JSON, each
method's audit.md and plots to --reports/METHOD/.

    .venv/bin/python -m bench.audit_methods --out bench/results/audit_methods.json
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from bench.common import timed
from moe_unlearn import Run
from moe_unlearn.audit.metrics import privleak
from moe_unlearn.data.corpus import make_canaries
from moe_unlearn.storage.builds import served_config

METHODS = ("exact", "gradient-ascent", "nabla-tau")


def run_method(
    pristine: Path, work: Path, reports: Path, method: str, ids: list[str], console: Console, verify: bool
) -> dict:
    run_dir = work / method
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(pristine, run_dir)
    run = Run(run_dir, console=console)
    certificate, wall = timed(run.forget, records=ids, audit=True, method=method)
    # The oracle takes a full training; an approximate version differs from it by construction (the
    # end-to-end test checks that `verify` says so), so only the exact one is verified here.
    equal = run.verify()["equal"] if method == "exact" and verify else None
    report = run.audit(certificate["request_id"], out_dir=reports / method)
    return {"wall_seconds": round(wall, 1), "verify_equal": equal, "report": report}


def row(method: str, r: dict, oracle_auc: dict) -> str:
    report = r["report"]
    canaries = report["canaries"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    auc = report["membership"]["attacks"]["loss"]
    leak = privleak(auc["after"]["auc"], oracle_auc["loss"])
    return (
        f"| {method} | {'not run' if r['verify_equal'] is None else 'yes' if r['verify_equal'] else 'no'} | "
        f"{report['bits_per_byte']['forget']['before']:.3f} -> {report['bits_per_byte']['forget']['after']:.3f} | "
        f"{report['bits_per_byte']['retained']['after']:.3f} | {report['bits_per_byte']['heldout']['after']:.3f} | "
        f"{auc['before']['auc']:.3f} -> {auc['after']['auc']:.3f} (SE {auc['after']['se']:.3f}) | "
        f"{'undefined' if leak is None else f'{leak:+.1f}%'} | "
        f"{mean(canaries['inserted']['before']):.2f} -> {mean(canaries['inserted']['after']):.2f} | "
        f"{mean(canaries['never_inserted']['after']):.2f} | "
        f"{canaries['tests']['after']['p_value']:.3g} / {canaries['tests']['after']['mean_difference_bits']:+.2f} | "
        f"{canaries['extracted']['before']} -> {canaries['extracted']['after']} of {canaries['extracted']['of']} | "
        f"{report['router']['agreement']:.1%} | {report['timings']['forget_seconds']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/experiment/audit.yaml", help="merged over configs/default.yaml")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_methods.json"))
    parser.add_argument("--reports", type=Path, default=Path("bench/out/audit_methods"), help="audit.md and plots")
    parser.add_argument(
        "--trained",
        type=Path,
        help="keep the trained run directory here (reused when it is up to date: later runs skip training)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip `verify` (the oracle's full training)")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep each method's run directory here (e.g. to run `moe-unlearn verify` on it later); default: a "
        "temporary directory",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args()
    console = Console(stderr=True)
    overrides = ["trainer.progress_bar=false", *args.overrides]
    # Methods not re-run keep their figures from an earlier run of the same config (so the exact forget
    # and the approximate ones can run separately, privleak still measured against the exact one).
    results = {}
    if args.out.exists():
        earlier = json.loads(args.out.read_text())
        if earlier.get("config") == args.config and earlier.get("overrides") == overrides:
            results = earlier["results"]
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-audit-") as tmp:
        work = args.work or Path(tmp)
        pristine = args.trained or work / "pristine"
        Run(pristine, console=console).train(args.config, overrides)
        corpus = served_config(pristine).data.corpus
        canaries = make_canaries(corpus.canaries, corpus.seed, corpus.domains)
        ids = [i for c in canaries for i in c.record_ids(corpus.canary_repeats)]
        for method in args.methods:
            results[method] = run_method(pristine, work, args.reports, method, ids, console, not args.no_verify)
            console.print(f"{method}: done in {results[method]['wall_seconds']} s")
    oracle = results.get("exact")
    oracle_auc = {
        a: (oracle or results[args.methods[0]])["report"]["membership"]["attacks"][a]["after"]["auc"]
        for a in ("loss", "zlib", "min_k")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": args.config, "overrides": overrides, "results": results}, indent=2))
    print(
        "| method | verify equal | bits/byte forget set | retained (after) | held-out (after) | MIA AUC loss "
        "| privleak vs exact | exposure inserted, mean bits | never-inserted | p / mean diff (after) "
        "| extracted | router agreement | forget (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for method, r in results.items():
        print(row(method, r, oracle_auc))


if __name__ == "__main__":
    main()
