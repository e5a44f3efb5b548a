"""Shared fixtures: one tiny trained run directory per test session (a few seconds to train)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moe_unlearn import Run

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "experiment" / "tiny.yaml"


def cli(
    *args, input: str | None = None, cwd: Path = REPO, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m moe_unlearn ARGS...` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "moe_unlearn", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        input=input,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A run directory trained once with configs/experiment/tiny.yaml. Do not modify it: copy it."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    Run(run_dir).train(TINY)
    return run_dir


@pytest.fixture
def tiny_copy(tiny_run_dir, tmp_path) -> Path:
    """A private copy of the tiny trained run directory, free to modify."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run_dir, dst)
    return dst
