"""Train the composed model: `python train.py [--run-dir DIR] [--config PATH] [key=value ...]`.

The same as `moe-unlearn train`; defaults come from configs/default.yaml. With several processes
(`trainer.devices`, `trainer.num_nodes`) every process runs this script: global rank 0 trains and
writes, the others only take part in the fits (see moe_unlearn/training/distributed.py).
"""

import sys

from moe_unlearn.cli import app
from moe_unlearn.training.launch import train_or_follow

if __name__ == "__main__":
    train_or_follow(app, sys.argv[1:], prog_name="train.py")
