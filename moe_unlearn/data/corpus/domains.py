"""The 16 domains, their generators, and the text of one corpus record.

The generators live by theme in personal.py, reports.py and technical.py; each is
(ctx, target bytes) -> text.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from moe_unlearn.data.corpus import personal, reports, technical
from moe_unlearn.data.corpus.engine import MIN_BYTES, Ctx, clip

MAX_DOMAINS = 16

GENERATORS: dict[str, Callable[[Ctx, int], str]] = {
    "recipes": personal.recipes,
    "weather": reports.weather,
    "code": technical.code,
    "legal": technical.legal,
    "football": reports.football,
    "basketball": reports.basketball,
    "clinical": technical.clinical,
    "reviews": personal.reviews,
    "emails": personal.emails,
    "chat": personal.chat,
    "timetables": technical.timetables,
    "shipping": technical.shipping,
    "chess": reports.chess,
    "poetry": personal.poetry,
    "finance": reports.finance,
    "logs": technical.logs,
}
DOMAINS: tuple[str, ...] = tuple(GENERATORS)


def record_text(domain: str, i: int, seed: int) -> str:
    """The text of record `i` of `domain`, from its own RNG seeded with (seed, domain, i)."""
    rng = random.Random(f"moe_unlearn.corpus:{seed}:{domain}:{i}")
    while True:  # the rare record under MIN_BYTES is redrawn from the same stream
        text = clip(GENERATORS[domain](Ctx(rng), int(rng.triangular(90, 600, 180))))
        if len(text.encode()) >= MIN_BYTES:
            return text
