"""Tests of moe_unlearn.audit.measure on small random mixtures (known answers by construction)."""

import math

import pytest
import torch

from moe_unlearn.audit.measure import (
    canary_exposure,
    extracts,
    membership_scores,
    router_agreement,
)
from moe_unlearn.data.corpus import Canary
from tests.models.test_moe import make_moe


@pytest.fixture(scope="module")
def moe():
    torch.set_num_threads(1)
    return make_moe()


def test_membership_bits_per_byte_is_what_score_reports(moe):
    scores = membership_scores(moe, ["Light rain in Lisbon.", "Preheat the oven to 200 C."])
    assert scores["bits_per_byte"][0] == pytest.approx(moe.score(b"Light rain in Lisbon.")["bits_per_byte"], rel=1e-5)
    assert scores["loss"] == [-b for b in scores["bits_per_byte"]]
    assert all(s <= 0 for s in scores["min_k"])


def test_exposure_is_within_the_sampled_range(moe):
    canary = Canary("canary-0000", "recipes", "PIN is ", "0a1b2c")
    result = canary_exposure(moe, canary, candidates=63)
    assert result["candidates"] == 63
    assert 0.0 <= result["exposure"] <= math.log2(64)
    assert math.isfinite(result["exposure_extrapolated"])


def test_the_secret_a_model_generates_greedily_is_extracted_another_is_not(moe):
    def greedy(prefix: str) -> bytes:
        return moe.generate(prefix.encode(), 6, temperature=0)[0]

    prefix = next(p for p in (f"Code {i}: " for i in range(1000)) if greedy(p).isascii())
    secret = greedy(prefix).decode()
    assert extracts(moe, Canary("c", "recipes", prefix, secret))
    other = "".join(chr((ord(ch) + 1) % 128) for ch in secret)
    assert not extracts(moe, Canary("c", "recipes", prefix, other))


def test_a_model_agrees_with_itself_and_not_with_a_different_router(moe):
    prefixes = [bytes([i, i + 1, i + 2]) * 4 for i in range(0, 200, 5)]
    assert router_agreement(moe, moe, prefixes) == 1.0
    assert router_agreement(moe, make_moe(seed=1), prefixes) < 1.0
