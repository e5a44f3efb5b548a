"""What every benchmark report states about how and where it was measured, and how it is written."""

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from moe_unlearn.storage.versions import environment


def machine() -> dict:
    """CPU model and cores, GPU, torch and threads."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), **environment()}


def provenance(config: Path | None) -> dict:
    """The head of every benchmark report: when, the exact command, the machine and the config file."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        "config_file": str(config or "configs/default.yaml"),
    }


def write_report(report: dict, markdown: str, out: Path) -> None:
    """The raw figures as JSON at `out` and the Markdown tables beside it (.md)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
