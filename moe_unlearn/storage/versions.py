"""Model files: safetensors written atomically and read only when their sha256 matches the manifest
(nothing is ever unpickled), tensor hashes (the unit of the exactness contract), and the environment
bit-identity depends on. Where the files live is `moe_unlearn.rundir`'s business.
"""

import hashlib
import os
import platform
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from moe_unlearn.errors import UserError


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


def checked_bytes(path: Path, expected_sha256: str) -> bytes:
    """A model file's bytes, refused (UserError) unless the file exists and its sha256 matches the manifest."""
    if not path.is_file():
        raise UserError(f"missing model file {path}: the version is incomplete; retrain or restore it")
    data = path.read_bytes()
    if sha256_bytes(data) != expected_sha256:
        raise UserError(f"corrupt model file {path}: sha256 does not match the manifest")
    return data


def load_tensors(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing it unless its sha256 matches the manifest."""
    data = checked_bytes(path, expected_sha256)
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
