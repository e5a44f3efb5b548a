"""Shared fixtures: one tiny trained run directory per test session (a few seconds to train), and one
intra-op thread for the modules that ask for it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_unlearn import Run

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "experiment" / "tiny.yaml"


def cli(
    *args,
    input: str | None = None,
    cwd: Path = REPO,
    env: dict | None = None,
    timeout: float = 300,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Run `moe-unlearn ARGS...` and capture its exit code, stdout and stderr.

    In this process by default (Typer's CliRunner: the same code path from argument parsing to exit code,
    without the ~5-10 s of importing torch and Lightning in a new interpreter); in a new `python -m
    moe_unlearn` process, as a user would, when `process` is set or `cwd`/`env` differ from the defaults.
    An exception the CLI did not turn into an exit code is raised here, so it fails the test loudly."""
    if process or env is not None or cwd != REPO:
        return subprocess.run(
            [sys.executable, "-m", "moe_unlearn", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            input=input,
            timeout=timeout,
        )
    from typer.testing import CliRunner

    from moe_unlearn.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP barrier stalls on a busy machine (100x faster).
    Opt-in per module (`pytestmark = pytest.mark.usefixtures("one_thread")`); restores the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
