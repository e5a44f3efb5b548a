import math
import random

import pytest
import torch

from moe_unlearn.audit.metrics import (
    auc,
    exposure,
    extrapolated_exposure,
    loss_score,
    mann_whitney,
    min_k_score,
    privleak,
    zlib_score,
)


def test_separable_scores_give_auc_1_and_reversed_give_0():
    assert auc([5.0, 6.0, 7.0], [1.0, 2.0])[0] == 1.0
    assert auc([1.0, 2.0], [5.0, 6.0, 7.0])[0] == 0.0


def test_identical_distributions_give_auc_near_one_half_with_a_standard_error():
    rng = random.Random(0)
    members = [rng.gauss(0, 1) for _ in range(400)]
    nonmembers = [rng.gauss(0, 1) for _ in range(400)]
    a, se = auc(members, nonmembers)
    assert abs(a - 0.5) < 3 * se
    assert 0.015 < se < 0.025  # ~ sqrt((1/n1 + 1/n0) / 12) for AUC 0.5


def test_auc_needs_both_sides():
    with pytest.raises(ValueError):
        auc([1.0], [])


def test_lower_loss_scores_as_more_member_like():
    assert loss_score(0.5) > loss_score(2.0)
    text = b"abcabcabc" * 20
    assert zlib_score(100.0, text) > zlib_score(400.0, text)


def test_min_k_is_the_mean_of_the_lowest_fraction():
    lp = torch.tensor([-0.1, -5.0, -0.2, -3.0, -0.3, -0.1, -0.1, -0.1, -0.1, -0.1])
    assert min_k_score(lp, k=0.2) == pytest.approx(-4.0)
    assert min_k_score(lp, k=1.0) == pytest.approx(lp.double().mean().item())


def test_privleak_is_undefined_when_the_oracle_auc_is_zero():
    assert privleak(0.4, 0.0) is None


def test_privleak_is_relative_to_the_oracle():
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.75, 0.5) == pytest.approx(50.0)


def test_a_canary_ranked_first_among_n_has_exposure_log2_n():
    candidates = [-10.0 - i for i in range(4095)]
    assert exposure(-1.0, candidates) == pytest.approx(math.log2(4096))
    assert exposure(-1e9, candidates) == 0.0  # least likely of all: no exposure
    assert exposure(-10.0, candidates) == pytest.approx(math.log2(4096) - 1)  # a tie counts against it


def test_extrapolated_exposure_matches_the_normal_tail_and_goes_beyond_the_sample():
    rng = random.Random(1)
    candidates = [rng.gauss(0, 1) for _ in range(20000)]
    assert extrapolated_exposure(0.0, candidates) == pytest.approx(1.0, abs=0.05)  # half are above the mean
    assert extrapolated_exposure(6.0, candidates) > math.log2(len(candidates))
    assert math.isfinite(extrapolated_exposure(60.0, candidates))


def test_mann_whitney_same_vs_shifted_distributions():
    rng = random.Random(2)
    a = [rng.gauss(0, 1) for _ in range(200)]
    b = [rng.gauss(0, 1) for _ in range(200)]
    assert mann_whitney(a, b)[1] > 0.05
    assert mann_whitney(a, [x + 1.0 for x in b])[1] < 1e-6
    assert mann_whitney([1.0] * 30, [1.0] * 30)[1] == 1.0
