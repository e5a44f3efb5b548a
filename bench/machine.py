"""What every benchmark table states about the machine it was measured on."""

import os
import platform
from pathlib import Path

from moe_unlearn.storage.versions import environment


def machine() -> dict:
    """CPU model and cores, GPU, torch and threads."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), **environment()}
