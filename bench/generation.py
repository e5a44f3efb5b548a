"""Benchmark: how fast the model writes (not a test).

On a trained run directory, for each of a few prompts: new bytes per second of the cached decoder
(models/decoding.py, what `generate` and the server use) and of the uncached reference (`cached=False`:
the whole chunk re-run for every byte, the path before the cache), both in-process with the same seeds
and a 16-byte run subtracted (the prefill and first steps), and of the CLI (`moe-unlearn generate` in a
subprocess, a 16-byte run subtracted: process start and loading cancel out). Also the decoder's cache
memory per sequence. Targets (issue [3/5]): the CLI at least 1,000 new bytes/s on 2 CPU cores, and the
cached path at least 20x the uncached one in the same run. Beside them, the generator before the cache
(a sliding window of block_size - 1 bytes, re-run for every byte), the path the issue's ~35 bytes/s
was measured on.

    .venv/bin/python -m bench.generation --run-dir checkpoints/default --bytes 2048
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import machine_line, provenance
from moe_unlearn.data.examples import BOS
from moe_unlearn.models.decoding import Decoder
from moe_unlearn.models.loading import load_version
from moe_unlearn.rundir import read_current

PROMPTS = ["Forecast for Lisbon by", "Tuesday 9 May: lemon risotto for 4", "def parse_args(argv):"]
SHORT = 16  # bytes of the run subtracted from every timing


def in_process(model, prompt: bytes, n: int, cached: bool) -> float:
    """Seconds to sample n bytes after `prompt` (temperature 0.7, seed 1), as `generate` does."""
    started = time.perf_counter()
    for _ in model.sample(prompt, n, 0.7, 0, 1, cached=cached):
        pass
    return time.perf_counter() - started


@torch.no_grad()
def sliding(model, prompt: bytes, n: int) -> float:
    """Seconds for n bytes by the generator before the cache (greedy): every byte re-ran the whole model on
    BOS and the last block_size - 1 bytes (a sliding window, so not `score`'s chunks: a different rule)."""
    data, started = bytearray(prompt), time.perf_counter()
    for _ in range(n):
        context = data[len(data) - (model.block_size - 1) :] if len(data) >= model.block_size else data
        log_p, _ = model(torch.tensor([[BOS, *context]]))
        data.append(int(log_p[0, -1].argmax()))
    return time.perf_counter() - started


def cli(run_dir: Path, prompt: str, n: int) -> float:
    """Wall seconds of `moe-unlearn generate` (a fresh process) for n new bytes."""
    command = [str(Path(sys.executable).parent / "moe-unlearn"), "generate", prompt, "--max-new-bytes", str(n)]
    started = time.perf_counter()
    subprocess.run([*command, "--seed", "1", "--run-dir", str(run_dir)], check=True, capture_output=True)
    return time.perf_counter() - started


def rate(n: int, seconds: float, short_seconds: float) -> float:
    return (n - SHORT) / max(seconds - short_seconds, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("checkpoints/default"))
    parser.add_argument("--bytes", type=int, default=2048, help="new bytes per timed run (> 16)")
    parser.add_argument("--uncached-bytes", type=int, default=512, help="new bytes per run of the reference")
    parser.add_argument("--out", type=Path, default=Path("bench/out/generation.json"))
    args = parser.parse_args()
    if min(args.bytes, args.uncached_bytes) <= SHORT:
        parser.error(f"--bytes and --uncached-bytes must be above {SHORT}")
    torch.set_num_threads(2)
    model, manifest = load_version(args.run_dir, read_current(args.run_dir))
    slot_bytes = sum(t.numel() * t.element_size() for pair in Decoder(model).stack.cache for t in pair)
    rows = []
    for prompt in PROMPTS:
        data = prompt.encode("utf-8")
        in_process(model, data, SHORT, True)  # warm-up
        cached = rate(args.bytes, in_process(model, data, args.bytes, True), in_process(model, data, SHORT, True))
        slow = in_process(model, data, args.uncached_bytes, False)
        uncached = rate(args.uncached_bytes, slow, in_process(model, data, SHORT, False))
        before = rate(args.uncached_bytes, sliding(model, data, args.uncached_bytes), sliding(model, data, SHORT))
        by_cli = rate(args.bytes, cli(args.run_dir, prompt, args.bytes), cli(args.run_dir, prompt, SHORT))
        rows.append({"prompt": prompt, "cli": by_cli, "cached": cached, "uncached": uncached, "sliding": before})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("cli", "cached", "uncached", "sliding")}
    report = {
        **provenance(None),
        "run_dir": str(args.run_dir),
        "version": manifest["version"],
        "mixing": model.settings,
        "bytes": args.bytes,
        "uncached_bytes": args.uncached_bytes,
        "cache_bytes_per_sequence": slot_bytes,
        "rows": rows,
        "mean": mean,
        "targets": {
            "cli_at_least_1000": mean["cli"] >= 1000,
            "cached_at_least_20x": mean["cached"] >= 20 * mean["uncached"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(machine_line(report["machine"]))
    print(
        f"- Run directory: {args.run_dir}, version {manifest['version']}, {len(model.experts)} experts, "
        f"{'a base' if model.base is not None else 'no base'}; mixing {model.settings['rule']}; temperature 0.7, seed 1"
    )
    print(f"- Command: `{report['command']}`")
    print(f"- Decoder cache: {slot_bytes / 2**20:.1f} MiB per sequence\n")
    header = f"CLI new bytes/s ({args.bytes}) | cached, in process | uncached ({args.uncached_bytes})"
    print(f"| prompt | {header} | cached / uncached | sliding window (before) | cached / sliding |")
    print("|---|---|---|---|---|---|---|")
    for r in [*rows, {"prompt": "**mean**", **mean}]:
        speeds = f"{r['cli']:,.0f} | {r['cached']:,.0f} | {r['uncached']:,.0f}"
        before = f"{r['sliding']:,.0f} | {r['cached'] / r['sliding']:.1f}x"
        print(f"| {r['prompt']} | {speeds} | {r['cached'] / r['uncached']:.1f}x | {before} |")
    met = report["targets"]
    print(
        f"\nTargets: CLI >= 1,000 bytes/s: {'pass' if met['cli_at_least_1000'] else 'FAIL'}; "
        f"cached >= 20x uncached: {'pass' if met['cached_at_least_20x'] else 'FAIL'}\nwrote {args.out}"
    )


if __name__ == "__main__":
    main()
