"""Seeded hashes that decide everything data-dependent: held-out membership, order, replay, seeds.

A record's fate depends only on (seed, its id), never on which other records exist, so removing one
record changes nothing about the others.
"""

import hashlib
from collections.abc import Iterable

from moe_unlearn.data.records import Record


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) from sha256 of the parts: stable across processes and machines."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def seed_for(root: int, *parts: object) -> int:
    """A 31-bit seed keyed by name (e.g. `seed_for(cfg.seed, "expert", "recipes")`)."""
    return int(unit_hash(root, *parts) * 2**31)


def is_heldout(record_id: str, seed: int, fraction: float) -> bool:
    return unit_hash(seed, "heldout", record_id) < fraction


def split(records: Iterable[Record], seed: int, fraction: float) -> tuple[list[Record], list[Record]]:
    """(train, heldout): held-out records never influence training."""
    train, heldout = [], []
    for r in records:
        (heldout if is_heldout(r.id, seed, fraction) else train).append(r)
    return train, heldout


def replay_sample(records: Iterable[Record], seed: int, n: int) -> list[Record]:
    """The n records with the smallest replay hash: deterministic, and a function of the set alone."""
    return sorted(records, key=lambda r: unit_hash(seed, "replay", r.id))[:n]


def ids_digest(ids: Iterable[str]) -> str:
    """sha256 of the sorted list of record ids: the training-data lineage of an artefact."""
    h = hashlib.sha256()
    for record_id in sorted(ids):
        h.update(record_id.encode() + b"\n")
    return h.hexdigest()
