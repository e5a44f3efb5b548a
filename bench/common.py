"""What the benchmarks share: where and how they were measured, timing, their report options and files."""

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moe_unlearn.storage.versions import environment

DICTD_CONFIG = Path("configs/experiment/dictd.yaml")
DICTD_HELP = "the dictd corpus (--config defaults to configs/experiment/dictd.yaml) instead of the built-in one"


def machine() -> dict:
    """CPU model and cores, GPU, torch and threads."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), **environment()}


def command() -> str:
    """The command line as typed in the repository root: `python -m bench.NAME ARGS`."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    script = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return shlex.join(["python", *script, *sys.argv[1:]])


def provenance(config: Path | None) -> dict:
    """The head of every benchmark report: when, the exact command, the machine and the config file."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command(),
        "machine": machine(),
        "config_file": str(config or "configs/default.yaml"),
    }


def machine_line(m: dict) -> str:
    """The Markdown line of a report that names the machine (`m`: `machine()`)."""
    gpu = m["cuda"] or "no GPU"
    return f"- Machine: {m['cpu']}, {m['cores']} cores, {gpu}; torch {m['torch']}, {m['threads']} threads"


def ingest_dictd(run, data: Path, sources, config, overrides) -> dict[str, float]:
    """Ingest each dictd source's JSONL file of `data` into `run`, with role base where the config's
    `data.base_sources` says so (dictd.yaml: gcide); seconds per source."""
    from moe_unlearn.config import load_config

    base = set(load_config(config, overrides).data.base_sources)
    seconds = {}
    for source in sources:
        role = "base" if source in base else None
        _, seconds[source] = timed(run.ingest, source, [data / f"{source}.jsonl"], role=role)
    return seconds


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), its wall time in seconds)."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def report_options(parser: argparse.ArgumentParser, name: str, data_help: str = DICTD_HELP, plot: str = "") -> None:
    """--config, --out, --plots and --data of a benchmark that writes bench/results/NAME[-dictd][-quick].json
    (and .md) and a plot, `plot` or NAME[-dictd][-quick].png (`report_defaults` fills them in)."""
    stem = f"{name}[-dictd][-quick]"
    parser.add_argument("--config", type=Path, help="merged on top of configs/default.yaml, as train.py does")
    parser.add_argument("--out", type=Path, help=f"JSON (and .md) path; default bench/results/{stem}.json")
    parser.add_argument("--plots", type=Path, default=Path("docs/img"), help=f"folder for {plot or stem + '.png'}")
    parser.add_argument("--data", type=Path, help=f"the --out folder of `data prepare dictd`: {data_help}")


def report_defaults(args: argparse.Namespace, name: str, dictd_config: bool = True) -> str:
    """Fill in what `report_options` leaves to --data and --quick: --out, and with --data (and `dictd_config`)
    --config = configs/experiment/dictd.yaml. Returns the names' suffix, "[-dictd][-quick]"."""
    if args.data and dictd_config:
        args.config = args.config or DICTD_CONFIG
    suffix = ("-dictd" if args.data else "") + ("-quick" if args.quick else "")
    args.out = args.out or Path(f"bench/results/{name}{suffix}.json")
    return suffix


def write_report(report: dict, markdown: str, out: Path) -> None:
    """The raw figures as JSON at `out` and the Markdown tables beside it (.md)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib `Figure` as a PNG at `path`, its folder created if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def publish(report: dict, markdown: str, out: Path, plot: Callable[[dict, Path], None], png: Path, console) -> None:
    """`write_report`, then the plot at `png`; says where they went and prints the Markdown on stdout."""
    write_report(report, markdown, out)
    plot(report, png)
    console.print(f"wrote {out}, {out.with_suffix('.md')}, {png}")
    print(markdown)
