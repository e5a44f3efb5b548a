"""Shared fixtures: one tiny trained run directory per test session (a few seconds to train)."""

import shutil
from pathlib import Path

import pytest

from moe_unlearn import Run

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "experiment" / "tiny.yaml"


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
