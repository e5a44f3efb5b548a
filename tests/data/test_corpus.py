"""Tests for the built-in synthetic corpus and its canaries."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from moe_unlearn.data.corpus import (
    CANARY_MAX_BYTES,
    DOMAINS,
    MAX_CANARY_REPEATS,
    MAX_DOMAINS,
    SECRET_ALPHABET,
    SECRET_LENGTH,
    Canary,
    canary_candidates,
    generate_corpus,
    make_canaries,
)
from moe_unlearn.data.records import Record

FUNCTION_WORDS = {
    "with",
    "that",
    "this",
    "from",
    "have",
    "there",
    "then",
    "will",
    "were",
    "your",
    "after",
    "before",
    "each",
    "into",
    "over",
    "until",
    "about",
    "than",
    "they",
    "them",
    "which",
    "when",
}


def digest(records: list[Record]) -> str:
    joined = "\x00".join(f"{r.id}\x01{r.source}\x01{r.text}" for r in records)
    return hashlib.sha256(joined.encode()).hexdigest()


@pytest.fixture(scope="module")
def default_corpus() -> list[Record]:
    return generate_corpus()


@pytest.fixture(scope="module")
def all_domains() -> list[Record]:
    return generate_corpus(domains=16, records_per_domain=300, seed=7)


def is_secret(s: str) -> bool:
    return len(s) == SECRET_LENGTH and all(ch in SECRET_ALPHABET for ch in s)


# ---------------------------------------------------------------- domains and shape


def test_domains_are_16_distinct_safe_names() -> None:
    assert MAX_DOMAINS == 16 and len(DOMAINS) == 16 and len(set(DOMAINS)) == 16
    assert all(re.fullmatch(r"[a-z0-9_-]+", d) for d in DOMAINS)


def test_default_corpus_is_4_domains_of_2000_and_fast() -> None:
    start = time.process_time()
    records = generate_corpus()
    elapsed = time.process_time() - start
    assert len(records) == 4 * 2000
    assert Counter(r.source for r in records) == {d: 2000 for d in DOMAINS[:4]}
    assert [r.id for r in records[:2]] == [f"{DOMAINS[0]}-000000", f"{DOMAINS[0]}-000001"]
    assert records[-1].id == f"{DOMAINS[3]}-001999"
    assert elapsed < 3.0


def test_full_corpus_generates_in_under_6_seconds() -> None:
    """CPU time, so that other processes on a busy machine do not make this flaky (2.1 s on an AVX-512
    machine, 3.5 s on a slower AVX2 one: the bound catches an accidental quadratic, not a slow CPU)."""
    start = time.process_time()
    records = generate_corpus(domains=16, records_per_domain=2000)
    assert time.process_time() - start < 6.0
    assert len(records) == 32_000


def test_ids_are_unique_and_well_formed(all_domains: list[Record]) -> None:
    assert len({r.id for r in all_domains}) == len(all_domains)
    for r in all_domains:
        assert re.fullmatch(rf"{re.escape(r.source)}-\d{{6}}", r.id)


def test_record_sizes_and_whitespace(all_domains: list[Record]) -> None:
    for r in all_domains:
        size = len(r.text.encode("utf-8"))
        assert 80 <= size <= 700, (r.id, size)
        assert "\n\n" not in r.text, r.id
        assert r.text == r.text.strip(), r.id
    by_source = defaultdict(list)
    for r in all_domains:
        by_source[r.source].append(len(r.text.encode()))
    for source, sizes in by_source.items():
        assert 200 <= sum(sizes) / len(sizes) <= 400, source


def test_records_are_varied(all_domains: list[Record]) -> None:
    texts = defaultdict(set)
    for r in all_domains:
        texts[r.source].add(r.text)
    assert all(len(t) >= 295 for t in texts.values())  # 300 per domain, at most a few duplicates


def test_some_non_ascii_bytes_exist(default_corpus: list[Record]) -> None:
    assert any(any(ord(ch) > 127 for ch in r.text) for r in default_corpus)


# ---------------------------------------------------------------- determinism and prefix-stability


def test_same_arguments_give_identical_corpus() -> None:
    a = generate_corpus(domains=4, records_per_domain=300, seed=3, canaries=5, canary_repeats=2)
    b = generate_corpus(domains=4, records_per_domain=300, seed=3, canaries=5, canary_repeats=2)
    assert a == b
    assert digest(a) == digest(b)
    assert digest(a) != digest(generate_corpus(domains=4, records_per_domain=300, seed=4, canaries=5, canary_repeats=2))


def test_corpus_is_identical_across_processes() -> None:
    """No salted hash(): a process with a different PYTHONHASHSEED produces the same bytes."""
    code = (
        "import hashlib; from moe_unlearn.data.corpus import generate_corpus as g; "
        "rs = g(16, 25, seed=11, canaries=6, canary_repeats=2); "
        "print(hashlib.sha256('\\x00'.join(f'{r.id}\\x01{r.source}\\x01{r.text}' for r in rs).encode())"
        ".hexdigest())"
    )
    expected = digest(generate_corpus(16, 25, seed=11, canaries=6, canary_repeats=2))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_fewer_domains_is_a_prefix_of_more_domains() -> None:
    two = generate_corpus(domains=2, records_per_domain=50, seed=5)
    four = generate_corpus(domains=4, records_per_domain=50, seed=5)
    assert two == four[:100]
    sixteen = generate_corpus(domains=16, records_per_domain=50, seed=5)
    assert four == sixteen[:200]


def test_fewer_records_per_domain_is_a_prefix_of_each_domain() -> None:
    small = generate_corpus(domains=4, records_per_domain=10, seed=9)
    big = generate_corpus(domains=4, records_per_domain=20, seed=9)
    for k, domain in enumerate(DOMAINS[:4]):
        assert small[10 * k : 10 * (k + 1)] == big[20 * k : 20 * k + 10]
        assert all(r.source == domain for r in small[10 * k : 10 * (k + 1)])


# ---------------------------------------------------------------- domains are not trivially separable


def test_no_default_domain_has_a_fixed_opening(default_corpus: list[Record]) -> None:
    openings = defaultdict(Counter)
    for r in default_corpus:
        openings[r.source][r.text.encode()[:8]] += 1
    for source, counts in openings.items():
        assert len(counts) >= 20, source
        assert counts.most_common(1)[0][1] < 0.5 * 2000, source


def test_default_domains_share_openings(default_corpus: list[Record]) -> None:
    """Some first words (a city, a weekday, a date) open records of at least two default domains."""
    sources_by_first_word = defaultdict(set)
    for r in default_corpus:
        sources_by_first_word[re.split(r"[\s,:.]", r.text, maxsplit=1)[0]].add(r.source)
    assert sum(len(s) >= 2 for s in sources_by_first_word.values()) >= 5


def test_default_domains_share_vocabulary(default_corpus: list[Record]) -> None:
    words_by_source = defaultdict(set)
    for r in default_corpus:
        words_by_source[r.source].update(w.lower() for w in re.findall(r"[A-Za-z]{4,}", r.text))
    counts = Counter(w for words in words_by_source.values() for w in words if w not in FUNCTION_WORDS)
    shared = {w for w, n in counts.items() if n >= 3}
    assert len(shared) >= 10
    assert {"lisbon", "monday"} <= shared  # the shared pools of cities and weekdays


# ---------------------------------------------------------------- canaries


def test_canary_records_are_appended_with_repeats() -> None:
    records = generate_corpus(domains=3, records_per_domain=5, seed=2, canaries=7, canary_repeats=3)
    assert len(records) == 3 * 5 + 7 * 3
    inserted = records[15:]
    canaries = make_canaries(7, seed=2, domains=3)
    assert [r.id for r in inserted] == [f"canary-{j:04d}-r{r}" for j in range(7) for r in range(3)]
    for j, c in enumerate(canaries):
        assert c.id == f"canary-{j:04d}"
        assert c.source == DOMAINS[j % 3]
        assert is_secret(c.secret)
        assert c.text.startswith(c.prefix + c.secret) and len(c.text) > len(c.prefix) + SECRET_LENGTH
        for rec in inserted[3 * j : 3 * j + 3]:
            assert (rec.source, rec.text) == (c.source, c.text)


def test_no_canaries_by_default(default_corpus: list[Record]) -> None:
    assert not any(r.id.startswith("canary-") for r in default_corpus)


def test_canaries_have_unique_prefixes_and_varied_secrets() -> None:
    canaries = make_canaries(500, seed=1, domains=16)
    assert len({c.prefix for c in canaries}) == 500
    assert len({c.secret for c in canaries}) >= 495
    per_domain = Counter(c.source for c in canaries)
    assert per_domain == {d: 500 // 16 + (k < 500 % 16) for k, d in enumerate(DOMAINS)}  # round-robin
    assert make_canaries(500, seed=2, domains=16) != canaries


def test_a_canary_opens_with_text_of_its_own_domain() -> None:
    """The secret sits in text of its source (so the router can place it), and that line is new text."""
    canaries = make_canaries(32, seed=0, domains=16)
    corpus_texts = [r.text for r in generate_corpus(domains=16, records_per_domain=20, seed=0)]
    for c in canaries:
        lead, sentence = c.prefix.rsplit("\n", 1)
        assert 0 < len(lead.encode()) <= 96 and sentence.endswith((" is ", ": ", " with "))
        assert len(c.text.encode()) <= CANARY_MAX_BYTES
        assert not any(t.startswith(lead + "\n") for t in corpus_texts)
    assert len({c.prefix.rsplit("\n", 1)[0] for c in canaries}) == 32


def test_never_inserted_canaries_are_distinct_and_same_format() -> None:
    inserted = make_canaries(200, seed=3, domains=4)
    held_out = make_canaries(200, seed=3, domains=4, start=10_000)
    assert [c.id for c in held_out] == [f"canary-{10_000 + j:04d}" for j in range(200)]
    assert not {c.prefix for c in inserted} & {c.prefix for c in held_out}
    assert not {c.id for c in inserted} & {c.id for c in held_out}
    assert all(is_secret(c.secret) and c.source in DOMAINS[:4] for c in held_out)


def test_canaries_depend_only_on_their_id() -> None:
    assert make_canaries(5, seed=4, domains=4) == make_canaries(10, seed=4, domains=4)[:5]
    assert make_canaries(3, seed=4, domains=4, start=5) == make_canaries(10, seed=4, domains=4)[5:8]


def test_canary_candidates_are_distinct_and_exclude_the_secret() -> None:
    canary = make_canaries(1, seed=0, domains=4)[0]
    candidates = canary_candidates(canary, 1000, seed=0)
    assert len(candidates) == 1000 == len(set(candidates))
    assert canary.secret not in candidates
    assert all(is_secret(s) for s in candidates)
    assert canary_candidates(canary, 1000, seed=0) == candidates
    assert canary_candidates(canary, 1000, seed=1) != candidates
    assert canary_candidates(canary, 0, seed=0) == []


def test_canary_candidates_drop_the_secret_when_it_is_drawn() -> None:
    """If the true secret is among the sampled values it is dropped and the list is still n long."""
    canary = make_canaries(1, seed=0, domains=4)[0]
    drawn = canary_candidates(canary, 50, seed=0)
    twin = Canary(id=canary.id, source=canary.source, prefix=canary.prefix, secret=drawn[10])
    candidates = canary_candidates(twin, 50, seed=0)
    assert len(set(candidates)) == 50 and drawn[10] not in candidates
    assert candidates[:10] == drawn[:10] and candidates[10:49] == drawn[11:]


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"domains": 0},
        {"domains": 17},
        {"domains": 2.0},
        {"records_per_domain": 0},
        {"canaries": -1},
        {"canary_repeats": 0},
        {"canary_repeats": MAX_CANARY_REPEATS + 1},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError) as info:
        generate_corpus(**{"records_per_domain": 1, **kwargs})
    assert "\n" not in str(info.value) and str(info.value)


def test_bad_canary_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError):
        make_canaries(3, seed=0, domains=0)
    with pytest.raises(ValueError):
        make_canaries(-1, seed=0, domains=4)
    with pytest.raises(ValueError):
        canary_candidates(make_canaries(1, seed=0, domains=4)[0], -1, seed=0)
