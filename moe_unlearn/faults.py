"""Fault injection for crash-safety tests: `MOE_UNLEARN_CRASH_AT=<step>` kills the process with SIGKILL
when a job reaches that named step, exactly as a power cut or an OOM killer would.

Steps: after-resolve, after-tombstone, mid-expert-training, mid-router-stage, before-switch,
after-switch, mid-scrub.
"""

import os
import signal

ENV = "MOE_UNLEARN_CRASH_AT"
STEPS = (
    "after-resolve",
    "after-tombstone",
    "mid-expert-training",
    "mid-router-stage",
    "before-switch",
    "after-switch",
    "mid-scrub",
)


def crash_point(step: str) -> None:
    """Die here (SIGKILL, no clean-up) if the environment asks for a crash at `step`."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
