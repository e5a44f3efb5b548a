"""Tests of moe_unlearn.audit.collect.audit_data: which records the audit compares with which."""

from moe_unlearn.audit.collect import AuditSettings, audit_data
from moe_unlearn.config import load_config
from moe_unlearn.data.corpus import generate_corpus, make_canaries
from moe_unlearn.data.splits import is_heldout

CANARIES, REPEATS = 12, 3
OVERRIDES = [
    "data.corpus.domains=3",
    "data.corpus.records_per_domain=80",
    f"data.corpus.canaries={CANARIES}",
    f"data.corpus.canary_repeats={REPEATS}",
    "model.expert.block_size=160",  # a canary fits in one block
]


def corpus_and_config():
    cfg = load_config("configs/experiment/tiny.yaml", OVERRIDES)
    c = cfg.data.corpus
    return generate_corpus(c.domains, c.records_per_domain, c.seed, c.canaries, c.canary_repeats), cfg


def test_forgotten_canaries_are_compared_with_never_inserted_canaries():
    records, cfg = corpus_and_config()
    canary_ids = {i for c in make_canaries(CANARIES, 0, 3) for i in c.record_ids(REPEATS)}
    forgotten = [r for r in records if r.id in canary_ids]
    data = audit_data(cfg, forgotten, records, AuditSettings(min_never_inserted=20))
    # Members: each forgotten text once (a canary's copies are one text), trained-on copies only.
    assert len(data.members) == len(set(data.members)) == len({r.text for r in data.forget})
    assert all(not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction) for r in data.forget)
    # Non-members: never-inserted canaries of the same format, none of them in the corpus.
    assert data.nonmembers == [c.text for c in data.never_inserted] and len(data.nonmembers) >= 20
    assert not set(data.nonmembers) & {r.text for r in records}
    assert data.nonmember_kinds == [f"{len(data.never_inserted)} never-inserted canaries"]
    # Bits per byte still has ordinary held-out records of the same sources.
    assert data.heldout and not {r.id for r in data.heldout} & canary_ids


def test_forgotten_records_are_compared_with_held_out_records_of_their_source():
    records, cfg = corpus_and_config()
    forgotten = [r for r in records if r.source == "weather" and r.id.startswith("weather-")][:30]
    data = audit_data(cfg, forgotten, records, AuditSettings(min_heldout=5))
    assert data.members == [r.text for r in data.forget]
    assert data.nonmembers == [r.text for r in data.heldout]
    assert all(r.source == "weather" and is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction) for r in data.heldout)
    assert data.never_inserted == [] and data.inserted == []
