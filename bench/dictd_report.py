"""Benchmark: the dictd corpus end to end (not a test).

Takes the JSONL files of `moe-unlearn data prepare dictd --out DIR`, creates a run directory with
configs/experiment/dictd.yaml (no built-in corpus), ingests the five dictionaries (one expert each),
trains, then forgets one real entry of each chosen dictionary with `--audit` (default: jargon's
"hacker" and gcide's "unlearn"; entries are named by the slug in their id, a lower-case headword) and
verifies the result against an oracle trained from scratch.
Prints Markdown tables (per-dictionary held-out bits per byte, router top-1 at 16/32/64 bytes,
forget cost per dictionary against the full training) and writes the raw figures as JSON.

    .venv/bin/python -m bench.dictd_report --data data/dictd --run-dir bench/out/dictd
"""

import argparse
import json
from pathlib import Path

from rich.console import Console

from bench.common import ingest_dictd, timed
from moe_unlearn import Run
from moe_unlearn.data.dictd import DICTIONARIES
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.storage.builds import served_config


def entry_id(data: Path, source: str, headword: str) -> str:
    """The id of the first entry of `source` with this headword slug (ids are `NAME:slug:offset`)."""
    prefix = f'{{"id": "{source}:{headword}:'
    with open(data / f"{source}.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix):
                return json.loads(line)["id"]
    raise SystemExit(f"no entry {headword!r} in {source}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the --out folder of `data prepare dictd`")
    parser.add_argument("--run-dir", type=Path, default=Path("bench/out/dictd"))
    parser.add_argument("--config", default="configs/experiment/dictd.yaml")
    parser.add_argument(
        "--forget",
        nargs="+",
        default=["jargon:hacker", "foldoc:compiler"],
        help="SOURCE:HEADWORD entries to forget (gcide's: a full rebuild)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip `verify` (the oracle's full training)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dictd_report.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args()
    console = Console(stderr=True)
    overrides = ["trainer.progress_bar=false", *args.overrides]
    run = Run(args.run_dir, console=console)
    results: dict = {"config": args.config, "overrides": overrides}

    if not run.exists():
        run.init(args.config, overrides)
        seconds = ingest_dictd(run, args.data, DICTIONARIES, args.config, overrides)
        results["ingest_seconds"] = {source: round(s, 1) for source, s in seconds.items()}
        console.print(f"ingested in {sum(seconds.values()):.1f} s")
    manifest, seconds = timed(run.train, args.config, overrides)
    results["train_seconds"] = round(seconds, 1)
    results["eval"] = manifest["eval"]
    results["train_seconds_per_file"] = {p: f.get("train_seconds") for p, f in manifest["files"].items()}

    cfg = served_config(args.run_dir)
    results["forgets"] = {}
    for entry in args.forget:
        source, headword = entry.split(":", 1)
        record = entry_id(args.data, source, headword)
        if is_heldout(record, cfg.seed, cfg.data.heldout_fraction):
            console.print(f"note: {record} is held out (never trained on): its forget retrains nothing")
        certificate, seconds = timed(run.forget, records=[record], audit=True)
        report = run.audit(certificate["request_id"], out_dir=args.run_dir.parent / "dictd-audits" / source)
        results["forgets"][entry] = {
            "record": record,
            "wall_seconds": round(seconds, 1),
            "retrained": certificate["retrained"],
            "timings": report["timings"],
            "bits_per_byte": report["bits_per_byte"],
            "router_agreement": report["router"]["agreement"],
        }
    if not args.no_verify:
        results["verify"], _ = timed(run.verify)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    ev = results["eval"]
    print("| dictionary | held-out bits/byte |")
    print("|---|---|")
    for source, bpb in ev["heldout_bpb"].items():
        print(f"| {source} | {bpb:.3f} |")
    print("\n| prefix bytes | router top-1 |")
    print("|---|---|")
    for n, acc in ev["router_top1"].items():
        print(f"| {n} | {acc:.1%} |")
    print("\n| forgotten entry | retrained | forget (s) | full retrain (s) | forget set bits/byte before -> after |")
    print("|---|---|---|---|---|")
    for entry, f in results["forgets"].items():
        bpb = f["bits_per_byte"]["forget"]
        print(
            f"| {entry} | {', '.join(f['retrained']['experts'])} + {len(f['retrained']['router_stages'])} stages | "
            f"{f['timings']['forget_seconds']} | {f['timings']['full_retrain_seconds']} | "
            f"{bpb['before']:.3f} -> {bpb['after']:.3f} |"
        )
    if "verify" in results:
        print(f"\nverify: {'identical' if results['verify']['equal'] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
