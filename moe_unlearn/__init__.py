"""moe-unlearn: language models that can forget.

A mixture of byte-level experts, one per data source, with a causal router trained in stages.
Forgetting retrains only the expert (and router stages) that saw the data, and the result equals
training from scratch without it. Start with `moe_unlearn.Run`.
"""

from moe_unlearn.errors import UserError
from moe_unlearn.run import Run

__all__ = ["Run", "UserError"]
__version__ = "0.1.0"
