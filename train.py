"""Train the composed model: `python train.py [--run-dir DIR] [--config PATH] [key=value ...]`.

The same as `moe-unlearn train`; defaults come from configs/default.yaml.
"""

import sys

from moe_unlearn.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]], prog_name="train.py")
