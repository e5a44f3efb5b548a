"""A built-in, seeded, multi-domain English-like corpus, so a default run needs no external data.

Each of the 16 `DOMAINS` has its own text style (recipes, weather bulletins, code, contract clauses,
match reports, clinical notes, chat logs, ...). All domains draw on shared pools of cities, people,
foods, dates and numbers, and many records open with a date, a place or a name, so the first few
bytes rarely give the domain away; a good classifier needs a few dozen. Some domains are deliberately
close (football and basketball, emails and chat, timetables and shipping logs, code and logs) to make
routing among 16 harder.

Everything is a pure function of the arguments: record `i` of a domain comes from its own RNG seeded
with (seed, domain, i), so a bigger corpus extends a smaller one, and nothing depends on the process
(no salted `hash()`). Canaries are synthetic secrets inserted to measure memorisation and unlearning:
`make_canaries` builds them and `canary_candidates` draws the alternatives for exposure estimates.

Modules: engine (the template engine), pools (the word pools it fills slots from), personal, reports
and technical (the domain generators, by theme), domains (domain -> generator, and one record's
text), canaries (canaries and argument checks). `generate_corpus` is here.
"""

from __future__ import annotations

from moe_unlearn.data.corpus.canaries import (
    CANARY_MAX_BYTES,
    MAX_CANARY_REPEATS,
    SECRET_ALPHABET,
    SECRET_LENGTH,
    Canary,
    canary_candidates,
    check_int,
    make_canaries,
)
from moe_unlearn.data.corpus.domains import DOMAINS, MAX_DOMAINS, record_text
from moe_unlearn.data.records import Record

__all__ = [
    "CANARY_MAX_BYTES",
    "DOMAINS",
    "MAX_CANARY_REPEATS",
    "MAX_DOMAINS",
    "SECRET_ALPHABET",
    "SECRET_LENGTH",
    "Canary",
    "canary_candidates",
    "PUBLIC",
    "base_corpus_domains",
    "generate_corpus",
    "make_canaries",
]


def generate_corpus(
    domains: int = 4,
    records_per_domain: int = 2000,
    seed: int = 0,
    canaries: int = 0,
    canary_repeats: int = 1,
    base_domains: int = 0,
    base_records: int = 0,
) -> list[Record]:
    """The built-in corpus: records of the first `domains` DOMAINS in order, then the canary records,
    then, for a base model (no canary in them), the records of the next `base_domains` DOMAINS (their
    own sources) and `base_records` more records of each of the first `domains` (the source PUBLIC:
    text of the experts' kinds that never needs forgetting).

    Record ids are f"{domain}-{i:06d}" with source = domain. Each of the `canaries` canaries (see
    make_canaries, start=0) appears `canary_repeats` times as its own record f"{canary.id}-r{r}" with
    source canary.source. Raises ValueError on out-of-range arguments.
    """
    check_int("domains", domains, 1, MAX_DOMAINS)
    check_int("records_per_domain", records_per_domain, 1)
    check_int("canaries", canaries, 0)
    check_int("canary_repeats", canary_repeats, 1, MAX_CANARY_REPEATS)
    check_int("domains + base_domains", domains + base_domains, 1, MAX_DOMAINS)
    check_int("base_records", base_records, 0)
    records = [
        Record(f"{d}-{i:06d}", d, record_text(d, i, seed)) for d in DOMAINS[:domains] for i in range(records_per_domain)
    ]
    for cn in make_canaries(canaries, seed, domains):
        records.extend(Record(record_id, cn.source, cn.text) for record_id in cn.record_ids(canary_repeats))
    for d in base_corpus_domains(domains, base_domains):
        records.extend(Record(f"{d}-{i:06d}", d, record_text(d, i, seed)) for i in range(records_per_domain))
    extra = range(records_per_domain, records_per_domain + base_records)
    records.extend(Record(f"{d}-{i:06d}", PUBLIC, record_text(d, i, seed)) for d in DOMAINS[:domains] for i in extra)
    return records


PUBLIC = "public"  # the built-in base source of `base_records`


def base_corpus_domains(domains: int, base_domains: int) -> tuple[str, ...]:
    """The built-in domains that are base sources: the `base_domains` after the first `domains`."""
    return DOMAINS[domains : domains + base_domains]
