"""Fault injection for crash-safety tests: `MOE_UNLEARN_CRASH_AT=<step>` kills the process with SIGKILL
when a job reaches that named step, exactly as a power cut or an OOM killer would; `<step>:<n>` at its
n-th time in the process (the second expert's training: `mid-expert-training:2`).

Steps: after-resolve, after-tombstone, mid-base-training, mid-expert-training, mid-router-stage,
mid-measure, before-switch, after-switch, mid-scrub, before-certify. A forget or drop passes every step
but the base's (a base-source forget too) and the measure (with --audit); `add`, `update` and `train`
pass the training steps and the switch.
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
    "before-certify",
)
MORE_STEPS = ("mid-base-training", "mid-measure")  # only in a full rebuild, only with --audit
_reached: dict[str, int] = {}


def armed(step: str) -> bool:
    """Count one more arrival at `step` and say whether the environment asks for a crash at this one."""
    asked = os.environ.get(ENV)
    if not asked or asked.partition(":")[0] != step:
        return False
    _reached[step] = _reached.get(step, 0) + 1
    nth = asked.partition(":")[2]
    return not nth or int(nth) == _reached[step]


def crash_point(step: str) -> None:
    """Die here (SIGKILL, no clean-up) if the environment asks for a crash at this arrival at `step`."""
    if armed(step):
        die()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
