"""What `forget --audit` measures, at the one moment it can: the new version is built, the old one
still exists, and the forgotten text has not been scrubbed yet. Only numbers are kept (no text, no
record ids); `audit --request` turns them into a report.

Sets, all from the sources the forgotten records came from:
- forget: the forgotten records that were trained on (held-out ones were never members);
- held-out: never-trained records of the same sources, as many as the forget set's texts that are not
  canaries and at least `min_heldout` (where the sources have them), for bits per byte and membership;
- retained: a sample of trained-on records that stay, for bits per byte;
- canaries (built-in corpus with canaries): the inserted canaries whose every copy is forgotten,
  and as many never-inserted canaries of the same format (at least `min_never_inserted`);
- membership inference: members are the forget set's distinct texts; non-members are drawn like
  them, so that the attack sees membership and not a change of distribution: never-inserted
  canaries for forgotten canary copies, held-out records of the same sources for the rest.
"""

import math
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress, TaskID

from moe_unlearn.audit.measure import canary_exposure, extracts, router_agreement, text_scores
from moe_unlearn.audit.metrics import auc, mann_whitney, privleak
from moe_unlearn.config import Config
from moe_unlearn.data.corpus import SECRET_ALPHABET, SECRET_LENGTH, Canary, make_canaries
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import is_heldout, unit_hash
from moe_unlearn.models.moe import MixtureOfExperts

ATTACKS = ("loss", "zlib", "min_k")
NEVER_INSERTED_START = 10_000  # make_canaries ids from here on are never written into a corpus


@dataclass
class AuditSettings:
    candidates: int = 4096  # sampled secrets each canary's secret is ranked among
    min_heldout: int = 200  # held-out records for membership inference, at least (where they exist)
    retained: int = 200  # retained trained-on records scored for bits per byte
    min_never_inserted: int = 128  # never-inserted canaries, at least
    router_prefixes: int = 100  # held-out prefixes per source for router agreement
    prefix_bytes: int = 64


@dataclass
class AuditData:
    forget: list[Record]
    heldout: list[Record]
    retained: list[Record]
    inserted: list[Canary]
    never_inserted: list[Canary]
    router_prefixes: list[bytes]
    members: list[str]  # membership inference: distinct texts of the forget set
    nonmembers: list[str]  # never-trained texts of the same kind
    nonmember_kinds: list[str]  # what the non-members are, for the report


def audit_data(cfg: Config, forgotten: list[Record], live: list[Record], settings: AuditSettings) -> AuditData:
    """The audit's sets from the forgotten records (text still present) and the live records of all sources."""
    seed, fraction = cfg.seed, cfg.data.heldout_fraction
    canaries = _corpus_canaries(cfg)
    repeats = cfg.data.corpus.canary_repeats
    canary_ids = {i for c in canaries for i in c.record_ids(repeats)}
    sources = {r.source for r in forgotten}
    forget = [r for r in forgotten if not is_heldout(r.id, seed, fraction)]

    def sample(records: list[Record], n: int, tag: str) -> list[Record]:
        return sorted(records, key=lambda r: unit_hash(seed, "audit", tag, r.id))[:n]

    same_sources = [r for r in live if r.source in sources and r.id not in canary_ids]
    held, kept = [], []
    for r in same_sources:
        (held if is_heldout(r.id, seed, fraction) else kept).append(r)
    gone = {r.id for r in forgotten}
    inserted = [
        c
        for c in canaries
        if all(i in gone for i in c.record_ids(repeats))
        and any(not is_heldout(i, seed, fraction) for i in c.record_ids(repeats))
    ]
    canary_members = list(dict.fromkeys(r.text for r in forget if r.id in canary_ids))
    other_members = list(dict.fromkeys(r.text for r in forget if r.id not in canary_ids))
    never = []
    if inserted or canary_members:
        n_never = max(len(inserted), len(canary_members), settings.min_never_inserted)
        never = make_canaries(n_never, cfg.data.corpus.seed, cfg.data.corpus.domains, start=NEVER_INSERTED_START)
    heldout = sample(held, max(len(other_members), settings.min_heldout), "heldout")
    nonmembers, kinds = [], []
    if canary_members:
        nonmembers += [c.text for c in never]
        kinds.append(f"{len(never)} never-inserted canaries")
    if other_members:
        nonmembers += list(dict.fromkeys(r.text for r in heldout))
        kinds.append(f"{len(heldout)} held-out records of the same sources")
    prefixes = []
    held_all = [r for r in live if r.id not in canary_ids and is_heldout(r.id, seed, fraction)]
    for source in sorted({r.source for r in live}):
        pool = [r for r in held_all if r.source == source]
        picked = sample(pool, settings.router_prefixes, "router")
        prefixes += [r.text.encode("utf-8")[: settings.prefix_bytes] for r in picked]
    return AuditData(
        forget=forget,
        heldout=heldout,
        retained=sample(kept, settings.retained, "retained"),
        inserted=inserted,
        never_inserted=never,
        router_prefixes=prefixes,
        members=canary_members + other_members,
        nonmembers=nonmembers,
        nonmember_kinds=kinds,
    )


def measure(
    before: MixtureOfExperts,
    after: MixtureOfExperts,
    data: AuditData,
    settings: AuditSettings,
    console: Console | None = None,
) -> dict:
    """Every number the report needs from the two models and the forget-time data (see the module doc),
    with a progress bar on `console`."""
    started = time.perf_counter()
    models = {"before": before, "after": after}
    groups = {"forget": data.forget, "heldout": data.heldout, "retained": data.retained}
    texts = list(dict.fromkeys([*(r.text for g in groups.values() for r in g), *data.members, *data.nonmembers]))
    canaries = [*data.inserted, *data.never_inserted] if data.inserted else []
    with Progress(*Progress.get_default_columns(), console=console, disable=console is None) as progress:
        task = progress.add_task("audit: scoring", total=2 * (len(texts) + len(canaries)))
        scored = {when: _score_texts(m, texts, progress, task) for when, m in models.items()}
        progress.update(task, description="audit: canary exposure")
        canary_numbers = _canaries(models, data, settings, progress, task)
    bits_per_byte = {
        group: {
            when: _byte_weighted([scored[when][r.text]["bits_per_byte"] for r in records], records) for when in models
        }
        for group, records in groups.items()
        if records
    }
    sides = {"members": data.members, "nonmembers": data.nonmembers}
    scores = {
        side: {when: {a: [scored[when][t][a] for t in side_texts] for a in ATTACKS} for when in models}
        for side, side_texts in sides.items()
    }
    attacks = None
    if data.members and data.nonmembers:
        attacks = {attack: {} for attack in ATTACKS}
        for attack in ATTACKS:
            for when in models:
                value, se = auc(scores["members"][when][attack], scores["nonmembers"][when][attack])
                attacks[attack][when] = {"auc": value, "se": se}
    return {
        "counts": {
            "forget_trained": len(data.forget),
            "heldout": len(data.heldout),
            "retained": len(data.retained),
            "members": len(data.members),
            "nonmembers": len(data.nonmembers),
        },
        "bits_per_byte": bits_per_byte,
        "membership": {
            "attacks": attacks,
            "nonmembers": " and ".join(data.nonmember_kinds),
            "scores": scores if attacks else None,
        },
        "canaries": canary_numbers,
        "router": {
            "agreement": router_agreement(before, after, data.router_prefixes),
            "prefixes": len(data.router_prefixes),
        },
        "audit_seconds": round(time.perf_counter() - started, 1),
    }


def _score_texts(model: MixtureOfExperts, texts: list[str], progress: Progress, task: TaskID) -> dict[str, dict]:
    """text -> its bits per byte and membership scores under `model`."""
    out = {}
    for text in texts:
        out[text] = text_scores(model, text)
        progress.advance(task)
    return out


def add_privleak(audit: dict, oracle: str | None) -> dict:
    """privleak per attack with the after-model as the oracle when it is bit-identical to retraining
    (`oracle` names that evidence); without an oracle (approximate methods) privleak is None."""
    attacks = audit["membership"]["attacks"]
    if oracle is None or attacks is None:
        return {**audit["membership"], "privleak": None, "privleak_oracle": None}
    leak = {
        a: {when: privleak(attacks[a][when]["auc"], attacks[a]["after"]["auc"]) for when in ("before", "after")}
        for a in ATTACKS
    }
    return {**audit["membership"], "privleak": leak, "privleak_oracle": oracle}


def _canaries(
    models: dict[str, MixtureOfExperts], data: AuditData, settings: AuditSettings, progress: Progress, task: TaskID
) -> dict | None:
    if not data.inserted:
        return None
    out = {
        "space_bits": SECRET_LENGTH * math.log2(len(SECRET_ALPHABET)),
        "candidates": settings.candidates,
        "estimator": f"sampled rank among {settings.candidates} candidates; extrapolated: normal fit (Carlini et al.)",
        "inserted": {},
        "never_inserted": {},
        "inserted_extrapolated": {},
        "never_inserted_extrapolated": {},
        "extracted": {"of": len(data.inserted)},
        "tests": {},
    }
    for when, model in models.items():
        for group, canaries in (("inserted", data.inserted), ("never_inserted", data.never_inserted)):
            found = []
            for canary in canaries:
                found.append(canary_exposure(model, canary, settings.candidates))
                progress.advance(task)
            out[group][when] = [f["exposure"] for f in found]
            out[f"{group}_extrapolated"][when] = [f["exposure_extrapolated"] for f in found]
        out["extracted"][when] = sum(extracts(model, c) for c in data.inserted)
        ins, never = out["inserted"][when], out["never_inserted"][when]
        _, p = mann_whitney(ins, never)
        out["tests"][when] = {"p_value": p, "mean_difference_bits": sum(ins) / len(ins) - sum(never) / len(never)}
    return out


def _corpus_canaries(cfg: Config) -> list[Canary]:
    corpus = cfg.data.corpus
    if not cfg.data.builtin or corpus.canaries == 0:
        return []
    return make_canaries(corpus.canaries, corpus.seed, corpus.domains)


def _byte_weighted(bits_per_byte: list[float], records: list[Record]) -> float:
    sizes = [len(r.text.encode("utf-8")) for r in records]
    return sum(b * n for b, n in zip(bits_per_byte, sizes, strict=True)) / max(1, sum(sizes))
