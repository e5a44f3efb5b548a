"""Several processes training one model: Lightning DDP across devices (`trainer.devices`) and nodes
(`trainer.num_nodes`); the process count is part of the config, so it is part of every lineage.

Every process runs the training command from the start: Lightning's own launcher re-runs `train.py`
once per extra device (with LOCAL_RANK set), torchrun and SLURM's srun start them all (RANK,
SLURM_PROCID). Global rank 0 runs the command as usual: it holds the run directory's lock and is the
only one to write (version files, progress, registry, `current`) or print. Every other rank is a
*follower*: it reads the same registry and config, so `build_version` plans the same build, and it
takes part in exactly the same fits, in the same order, writing nothing. DDP keeps the weights equal
across ranks, so rank 0's files are the model. The plans agree because rank 0 cannot finish a fit, so
cannot record progress or switch `current`, before every follower has joined that fit: followers read
the run directory as rank 0 planned from it (what rank 0 writes before its first fit, the new version's
directory and config, changes no plan). Each node needs the run directory at the same path, the same
bytes (a copy: SQLite's write-ahead log does not work across hosts), and each build a new process (a
build's followers leave when its last fit ends).
"""

import os

from moe_unlearn.config import Config
from moe_unlearn.errors import UserError

# Set by the launchers before Lightning starts; any of them above 0 means "not global rank 0". NODE_RANK
# covers Lightning's manual multi-node launch, whose first process on node i has no LOCAL_RANK yet.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")
REGISTRY_WAIT_S = 600  # a follower started with rank 0 (torchrun, srun) waits this long for a new run dir
ENTRY_VARIABLE = "MOE_UNLEARN_TRAIN_OR_FOLLOW"  # set by `train_or_follow`: this process tree has followers
# Strategies whose processes each run the script (the design above). Not ddp_spawn/ddp_fork (rank 0 is a
# child of the process that writes), nor sharded ones (each process would hold part of the weights).
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def launched_as_follower() -> bool:
    """Whether a launcher started this process as a rank other than 0 (whatever the config says)."""
    return any(int(os.environ.get(name) or 0) > 0 for name in RANK_VARIABLES)


def multi_process(cfg: Config) -> bool:
    return cfg.trainer.devices != 1 or cfg.trainer.num_nodes != 1


def is_primary(cfg: Config) -> bool:
    """Whether this process writes: always with one process, else only global rank 0."""
    return not (multi_process(cfg) and launched_as_follower())


def check_followers(cfg: Config) -> None:
    """Before a multi-process fit: the other processes must be following this build, which only
    `train_or_follow` (train.py) arranges; any other command would wait for ranks that never join."""
    if multi_process(cfg) and cfg.trainer.strategy not in STRATEGIES:
        raise UserError(f"trainer.strategy={cfg.trainer.strategy} with several processes: use one of {STRATEGIES}")
    if multi_process(cfg) and ENTRY_VARIABLE not in os.environ:
        raise UserError(
            f"this config trains with {cfg.trainer.devices} devices x {cfg.trainer.num_nodes} nodes: several "
            "processes can only be started by `python train.py` or `moe-unlearn train` (README: multi-process training)"
        )
