"""The template engine: fills templates such as "{City}, {date}: {2-40} km" from one record's RNG.

Slot values come from the word pools (pools.py). `size` and `clip` keep records within
MIN_BYTES..MAX_BYTES.
"""

from __future__ import annotations

import functools
import random
import re

from moe_unlearn.data.corpus.pools import POOLS

MIN_BYTES, MAX_BYTES = 80, 700

# {city}: a fresh draw; {City}: capitalised; {city1}: one value per record (distinct from {city2});
# {2-40}: a random integer.
_SLOT = re.compile(r"\{([A-Za-z_]+[0-9]?|[0-9]+-[0-9]+)\}")


@functools.cache
def _compile(template: str) -> tuple[str | tuple, ...]:
    """Split a template into literal strings and slots: ('#', lo, hi) or ('@', pool, key, capitalise)."""
    parts: list[str | tuple] = []
    pos = 0
    for m in _SLOT.finditer(template):
        parts.append(template[pos : m.start()])
        name = m.group(1)
        if name[0].isdigit():
            lo, hi = name.split("-")
            parts.append(("#", int(lo), int(hi)))
        else:
            base = name.rstrip("0123456789").lower()
            if base not in POOLS:
                raise KeyError(f"unknown slot {{{name}}} in template {template!r}")
            parts.append(("@", base, name.lower() if name[-1].isdigit() else None, name[0].isupper()))
        pos = m.end()
    parts.append(template[pos:])
    return tuple(p for p in parts if p != "")


class Ctx:
    """Fills templates from one record's RNG, remembering numbered slots like {city1}."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bound: dict[str, str] = {}

    def __call__(self, template: str) -> str:
        out = []
        for p in _compile(template):
            if isinstance(p, str):
                out.append(p)
            elif p[0] == "#":  # (faster than randint; uniform up to float granularity)
                out.append(str(p[1] + int(self.rng.random() * (p[2] - p[1] + 1))))
            else:
                out.append(self._slot(p[1], p[2], p[3]))
        return "".join(out)

    def _slot(self, base: str, key: str | None, cap: bool) -> str:
        if key is not None and key in self.bound:
            v = self.bound[key]
        else:
            v = self._draw(base)
            if key is not None:
                for _ in range(5):  # keep {city1}, {city2}, ... distinct
                    if v not in self.bound.values():
                        break
                    v = self._draw(base)
                self.bound[key] = v
        return v[0].upper() + v[1:] if cap else v

    def _draw(self, base: str) -> str:
        pool = POOLS[base]
        v = pool(self) if callable(pool) else pool[int(self.rng.random() * len(pool))]
        return self(v) if "{" in v else v

    def pick(self, templates: tuple[str, ...] | list[str]) -> str:
        """Fill one template chosen at random."""
        return self(self.rng.choice(templates))

    def maybe(self, p: float, template: str) -> str:
        """Fill `template` with probability p, else ''."""
        return self(template) if self.rng.random() < p else ""

    def grow(
        self,
        templates: list[str | tuple[str, ...]],
        used: int,
        target: int,
        lo: int = 1,
        ordered: bool = False,
        reserve: int = 40,
    ) -> list[str]:
        """Fill templates in random order until `used` bytes reach `target` (at least `lo` of them, never
        past the byte cap). With `ordered` the result keeps the order of `templates`. A tuple is a group
        of alternatives (e.g. 'shares rose' / 'shares fell') of which one is used."""
        order = list(range(len(templates)))
        self.rng.shuffle(order)
        chosen: list[tuple[int, str]] = []
        for i in order:
            if len(chosen) >= lo and used >= target:
                break
            t = templates[i]
            s = self.pick(t) if isinstance(t, tuple) else self(t)
            n = len(s.encode()) + 1
            if len(chosen) >= lo and used + n > MAX_BYTES - reserve:
                continue
            chosen.append((i, s))
            used += n
        if ordered:
            chosen.sort()
        return [s for _, s in chosen]


def size(*parts: str | list[str]) -> int:
    """Bytes taken by the given lines (or lists of lines), one separator each."""
    return sum(len(s.encode()) + 1 for p in parts for s in ([p] if isinstance(p, str) else p))


def clip(text: str) -> str:
    """Drop blank lines and trailing spaces; cut at a line or sentence end to fit in MAX_BYTES."""
    text = "\n".join(line.rstrip() for line in text.strip().split("\n") if line.strip())
    data = text.encode()
    if len(data) <= MAX_BYTES:
        return text
    head = data[:MAX_BYTES].decode(errors="ignore")
    cut = max(head.rfind("\n"), head.rfind(". ") + 1)
    return (head[:cut] if cut >= MIN_BYTES else head).rstrip()
