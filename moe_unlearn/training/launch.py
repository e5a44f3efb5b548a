"""The training command's entry point under several processes: global rank 0 runs `moe-unlearn train`,
every other rank *follows* the build rank 0 runs (see moe_unlearn.training.distributed for the design).
"""

import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from moe_unlearn.config import Config, load_config
from moe_unlearn.errors import UserError
from moe_unlearn.rundir import registry_path
from moe_unlearn.storage.registry import Registry
from moe_unlearn.training.build import build_version
from moe_unlearn.training.distributed import ENTRY_VARIABLE, REGISTRY_WAIT_S, launched_as_follower, multi_process


def follow(run_dir: Path, cfg: Config) -> None:
    """Take part in the fits of the build that global rank 0 runs in `run_dir` with `cfg`."""
    path = registry_path(run_dir)
    deadline = time.monotonic() + REGISTRY_WAIT_S
    while not path.is_file():  # rank 0 creates a new run directory (atomically) before its first fit
        if time.monotonic() > deadline:
            raise UserError(f"no run directory at {run_dir}: on nodes other than rank 0's, copy it there first")
        time.sleep(0.5)
    build_version(run_dir, Registry(path), cfg, only=cfg.train.experts, console=Console(quiet=True))


def train_or_follow(app, args: list[str], prog_name: str) -> None:
    """`moe-unlearn train ARGS` (`app` is the CLI), or `follow` it in a follower process of a
    multi-process config. Arguments are parsed by the CLI's own `train` command."""
    os.environ[ENTRY_VARIABLE] = "1"  # inherited by the processes Lightning starts
    if not launched_as_follower():
        app(["train", *args], prog_name=prog_name)
        return

    try:
        with typer.main.get_command(app).commands["train"].make_context(prog_name, list(args)) as ctx:
            cfg = load_config(ctx.params["config"], ctx.args)
            run_dir = ctx.params["run_dir"]
        if not multi_process(cfg):  # a rank of some other job (e.g. an srun step of single-process runs)
            app(["train", *args], prog_name=prog_name)
            return
        follow(run_dir, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
