"""Model versions on disk: `versions/<n>/` of safetensors files, a manifest, and the `current` pointer.

A version is built beside the one being served and becomes live only when `current` is switched
with `os.replace` (atomic). Every file is checked against the manifest's sha256 before it is used;
nothing is ever unpickled.
"""

import hashlib
import json
import os
import platform
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from moe_unlearn.errors import UserError

VERSIONS_DIR = "versions"
CURRENT = "current"
MANIFEST = "manifest.json"


def version_dir(run_dir: Path, n: int) -> Path:
    return Path(run_dir) / VERSIONS_DIR / str(n)


def read_current(run_dir: Path) -> int | None:
    """The version being served, or None if nothing has been trained yet."""
    path = Path(run_dir) / CURRENT
    if not path.exists():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise UserError(f"{path}: corrupt pointer {text[:20]!r} (expected a version number)")
    return int(text)


def switch_current(run_dir: Path, n: int) -> None:
    """Point `current` at version n atomically: readers see the old or the new number, never a mix."""
    tmp = Path(run_dir) / f"{CURRENT}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{n}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(run_dir) / CURRENT)
    _fsync_dir(Path(run_dir))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors (contiguous CPU copies) and return the file's sha256."""
    data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    return write_file(path, data)


def write_file(path: Path, data: bytes) -> str:
    """Write a model file as a new file (atomically, never through a hard link: a build links the files
    it reuses to the served version's) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return sha256_bytes(data)


def load_tensors(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing it unless its sha256 matches the manifest."""
    if not path.is_file():
        raise UserError(f"missing model file {path}: the version is incomplete; retrain or restore it")
    data = path.read_bytes()
    if sha256_bytes(data) != expected_sha256:
        raise UserError(f"corrupt model file {path}: sha256 does not match the manifest")
    try:
        return load_safetensors(data)
    except SafetensorError as e:  # only reachable if the manifest itself was forged
        raise UserError(f"unreadable model file {path}: {e}") from None


def tensor_hashes(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """sha256 of every tensor's bytes (with dtype and shape): the unit of the exactness contract."""
    out = {}
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        header = f"{t.dtype}:{tuple(t.shape)}:".encode()
        out[name] = hashlib.sha256(header + t.view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


def write_manifest(vdir: Path, manifest: dict) -> None:
    tmp = vdir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, vdir / MANIFEST)


def read_manifest(vdir: Path) -> dict:
    path = vdir / MANIFEST
    if not path.is_file():
        raise UserError(f"missing manifest {path}: the version was never completed")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"corrupt manifest {path}: not valid JSON") from None


def environment() -> dict:
    """What bit-identity depends on besides config and data: torch version, CPU, threads."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags_sha256": sha256_bytes(flags.encode()),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
