"""Fault injection for crash-safety tests: `MOE_UNLEARN_CRASH_AT=<step>` kills the process with SIGKILL
when a job reaches that named step, exactly as a power cut or an OOM killer would.

Steps: after-resolve, after-tombstone, mid-expert-training, mid-router-stage, before-switch,
after-switch, mid-scrub.
"""

import os
import signal

import lightning as L

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


class CrashMidTraining(L.Callback):
    """Calls `crash_point(step)` after the second optimizer step of a fit."""

    def __init__(self, step: str):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= 2:
            crash_point(self.step)


def training_callbacks(kind: str) -> list[L.Callback]:
    """The crash callback for this kind of fit ("expert" or "router"), only when a test asks for it."""
    step = "mid-expert-training" if kind == "expert" else "mid-router-stage"
    return [CrashMidTraining(step)] if os.environ.get(ENV) == step else []
