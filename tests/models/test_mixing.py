"""Tests of moe_unlearn.models.mixing and the posterior rule in the composed model: causal weights
that sum to one, pruning that keeps the most probable candidate, and every scoring path agreeing."""

import math
from dataclasses import replace

import pytest
import torch

from moe_unlearn.config import Config, MixingConfig, RouterModelConfig, config_from_yaml, to_yaml
from moe_unlearn.data.examples import BOS, chunks, lm_example
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.mixing import from_manifest, log_prior, posterior_log_weights, settings
from moe_unlearn.models.moe import BASE, MixtureOfExperts
from moe_unlearn.models.router import FeatureRouter, feature_size
from tests.models.test_moe import EXPERT, bos_inputs, make_moe, random_bytes

pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py

POSTERIOR = MixingConfig(rule="posterior", decay=0.95, keep=2, threshold=0.05, base_prior=0.2, prune_after=4)


def posterior_moe(mixing: MixingConfig = POSTERIOR, base: bool = True) -> MixtureOfExperts:
    routed = make_moe()
    torch.manual_seed(7)
    base_model = ByteTransformer(EXPERT) if base else None
    if base_model is not None:
        with torch.no_grad():
            for p in base_model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    experts = dict(zip(routed.names, routed.experts, strict=True))
    return MixtureOfExperts(experts=experts, router=routed.router, top_k=2, mixing=mixing, base=base_model).eval()


@pytest.fixture(scope="module")
def moe() -> MixtureOfExperts:
    return posterior_moe()


def random_log_lik(n: int, t: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    log_lik = -torch.rand(n, t, c, generator=g) * 6
    prior = torch.randn(n, t, c, generator=g).log_softmax(-1)
    return log_lik, prior


def test_weights_sum_to_one_at_every_position(moe: MixtureOfExperts) -> None:
    _, weights = moe(bos_inputs(random_bytes(31, seed=3)))
    assert weights.shape == (1, 32, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 32))
    assert moe.names[-1] == BASE


def test_weights_are_causal(moe: MixtureOfExperts) -> None:
    """Changing byte t changes neither the weights nor the probabilities used for bytes 0..t."""
    data = bytearray(random_bytes(31, seed=4))
    log_p, weights = moe(bos_inputs(bytes(data)))
    for t in (0, 5, 20, 30):
        changed = bytearray(data)
        changed[t] = (changed[t] + 101) % 256
        log_p2, weights2 = moe(bos_inputs(bytes(changed)))
        # inputs[:, s] is byte s-1: the weights and distributions at positions <= t predict bytes <= t
        torch.testing.assert_close(weights2[:, : t + 1], weights[:, : t + 1], rtol=0, atol=0)
        torch.testing.assert_close(log_p2[:, : t + 1], log_p[:, : t + 1], rtol=0, atol=0)
        assert not torch.equal(weights2[:, t + 1 :], weights[:, t + 1 :])


def test_mixture_is_a_distribution(moe: MixtureOfExperts) -> None:
    log_p, _ = moe(bos_inputs(random_bytes(20)))
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(1, 21))


@pytest.mark.parametrize("seed", range(5))
def test_pruning_never_drops_the_most_probable_candidate(seed: int) -> None:
    """Step by step: before each step's pruning, the most probable live candidate stays live."""
    log_lik, prior = random_log_lik(6, 40, 5, seed)
    mixing = MixingConfig(rule="posterior", decay=0.9, keep=1, threshold=0.3, prune_after=0)
    state, pruned_any = None, False
    for t in range(40):
        live_before = torch.ones(6, 5, dtype=torch.bool) if state is None else state[1]
        evidence = torch.zeros(6, 5) if state is None else state[0]
        before = (prior[:, t] + evidence).masked_fill(~live_before, -math.inf)
        log_w, state = posterior_log_weights(log_lik[:, t : t + 1], prior[:, t : t + 1], mixing, state)
        best = before.argmax(-1)
        assert (log_w[:, 0].gather(1, best[:, None]) > -math.inf).all()
        assert state[1].sum(-1).min() >= 1
        pruned_any |= bool((~state[1]).any())
    assert pruned_any  # the threshold was met: the test exercised pruning


def test_pruning_keeps_at_least_keep_candidates_and_pruned_ones_never_return() -> None:
    log_lik, prior = random_log_lik(8, 64, 6, seed=11)
    mixing = MixingConfig(rule="posterior", keep=2, threshold=0.2, prune_after=10)
    log_w, (_, live, position) = posterior_log_weights(log_lik, prior, mixing)
    alive = log_w > -math.inf  # (N, T, C)
    assert position == 64
    assert alive[:, :10].all()  # nothing pruned before prune_after
    assert not alive[:, 10:].all()
    assert (alive.sum(-1) >= 2).all()
    assert (alive[:, 1:] <= alive[:, :-1]).all()  # once pruned, pruned for the rest of the chunk
    assert torch.equal(alive[:, -1], live)


def test_no_pruning_and_no_decay_is_bayesian_model_averaging() -> None:
    """decay 1 and threshold 0: w_c(t) is the prior times the likelihood of all bytes before t."""
    log_lik, prior = random_log_lik(3, 20, 4, seed=5)
    log_w, _ = posterior_log_weights(log_lik, prior, MixingConfig(rule="posterior", decay=1.0, threshold=0.0))
    before = torch.cat([torch.zeros(3, 1, 4), log_lik.cumsum(1)[:, :-1]], 1)
    torch.testing.assert_close(log_w, (prior + before).log_softmax(-1))


def test_a_state_continues_a_sequence_exactly() -> None:
    log_lik, prior = random_log_lik(2, 30, 3, seed=6)
    whole, _ = posterior_log_weights(log_lik, prior, POSTERIOR)
    first, state = posterior_log_weights(log_lik[:, :12], prior[:, :12], POSTERIOR)
    rest, _ = posterior_log_weights(log_lik[:, 12:], prior[:, 12:], POSTERIOR, state)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, rtol=0, atol=0)


def test_prior_gives_the_base_its_share() -> None:
    logits = torch.randn(2, 5, 3)
    p = log_prior(logits, 0.25).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(p[..., -1], torch.full((2, 5), 0.25))
    torch.testing.assert_close(p[..., :3] / 0.75, logits.softmax(-1))


@pytest.mark.parametrize("n", [1, 31, 32, 75])
def test_score_equals_the_chunked_forward(moe: MixtureOfExperts, n: int) -> None:
    data = random_bytes(n, seed=n)
    nats = 0.0
    for chunk in chunks(data, moe.block_size):
        inputs, targets = lm_example(chunk)
        log_p, _ = moe(inputs[None])
        nats -= log_p[0].gather(-1, targets[:, None]).sum().item()
    result = moe.score(data)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / n, rel=1e-5)
    assert set(result["expert_weights"]) == {*moe.names}
    assert sum(result["expert_weights"].values()) == pytest.approx(1.0, rel=1e-5)
    assert result["mixing"] == {
        "rule": "posterior",
        "decay": 0.95,
        "keep": 2,
        "threshold": 0.05,
        "prune_after": 4,
        "base_prior": 0.2,
        "prior_temperature": 4.0,
    }


def test_score_batch_equals_scoring_each_text_alone(moe: MixtureOfExperts) -> None:
    texts = [random_bytes(n, seed=n) for n in (5, 40, 0, 64, 17)]
    for alone, batched in zip([moe.score(t) for t in texts], moe.score_batch(texts, max_rows=3), strict=True):
        if alone["bytes"]:
            assert batched["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-5)
        for name, w in alone["expert_weights"].items():
            assert batched["expert_weights"][name] == pytest.approx(w, abs=1e-5)


@pytest.mark.parametrize("prefix_len", [0, 9])
def test_continuation_log_probs_equal_the_full_forward(moe: MixtureOfExperts, prefix_len: int) -> None:
    prefix = random_bytes(prefix_len, seed=2)
    continuations = [random_bytes(6, seed=s) for s in range(4)]
    got = moe.continuation_log_probs(prefix, continuations)
    for value, tail in zip(got.tolist(), continuations, strict=True):
        log_p, _ = moe(bos_inputs(prefix + tail)[:, :-1])
        targets = torch.tensor([*tail])
        expected = log_p[0, prefix_len:].gather(-1, targets[:, None]).sum().item()
        assert value == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("prefix_len", [0, 1, 9])
def test_continuation_log_probs_with_a_router_on_base_features_equal_the_full_forward(prefix_len: int) -> None:
    """The router's byte n-grams at a continuation's first bytes reach into the shared prefix."""
    posterior = posterior_moe()
    experts = dict(zip(posterior.names, posterior.experts, strict=False))  # names end with the base
    torch.manual_seed(8)
    router = FeatureRouter(RouterModelConfig(hidden=16), feature_size(EXPERT.d_model), len(experts))
    with torch.no_grad():
        for p in router.parameters():
            p.add_(torch.randn_like(p))  # a prior far from uniform, so the features matter
    moe = MixtureOfExperts(experts=experts, router=router, top_k=2, mixing=POSTERIOR, base=posterior.base).eval()
    prefix = random_bytes(prefix_len, seed=2)
    continuations = [random_bytes(6, seed=s) for s in range(3)]
    got = moe.continuation_log_probs(prefix, continuations)
    for value, tail in zip(got.tolist(), continuations, strict=True):
        log_p, _ = moe(bos_inputs(prefix + tail)[:, :-1])
        expected = log_p[0, prefix_len:].gather(-1, torch.tensor([*tail])[:, None]).sum().item()
        assert value == pytest.approx(expected, abs=1e-4)


def test_generate_names_no_base_weight_under_the_router_rule() -> None:
    routed = posterior_moe(MixingConfig(rule="router"))
    assert BASE not in routed.names
    _, weights = routed.generate(b"ab", 4, seed=1)
    assert set(weights) == {"code", "news", "recipes"}


def test_generate_is_seeded_under_the_posterior(moe: MixtureOfExperts) -> None:
    a, _ = moe.generate(b"the ", 12, seed=3)
    b, _ = moe.generate(b"the ", 12, seed=3)
    assert a == b and len(a) == 12
    greedy, _ = moe.generate(b"the ", 5, temperature=0)
    log_p, _ = moe(torch.tensor([[BOS, *b"the "]]))
    assert greedy[0] == int(log_p[0, -1].argmax())


def test_settings_name_the_rule() -> None:
    assert settings(MixingConfig(rule="router"), 3, has_base=True) == {"rule": "router", "top_k": 3}
    assert "base_prior" not in settings(POSTERIOR, 2, has_base=False)


def test_versions_from_before_mixing_used_the_router_top_k() -> None:
    mixing, top_k = from_manifest({"top_k": 3})
    assert (mixing.rule, top_k) == ("router", 3)
    saved = settings(POSTERIOR, 2, has_base=True)
    assert from_manifest({"top_k": 2, "mixing": saved}) == (POSTERIOR, 2)


def test_prior_temperature_flattens_the_router_prior() -> None:
    logits = torch.randn(2, 5, 3) * 4
    as_trained, tempered = log_prior(logits, 0.25).exp(), log_prior(logits, 0.25, temperature=4.0).exp()
    torch.testing.assert_close(tempered[..., :3] / 0.75, (logits / 4).softmax(-1))
    torch.testing.assert_close(tempered[..., -1], as_trained[..., -1])  # the base keeps its share
    assert (tempered[..., :3].amax(-1) <= as_trained[..., :3].amax(-1) + 1e-6).all()
    uniform = log_prior(logits, 0.25, temperature=1e9).exp()[..., :3] / 0.75
    torch.testing.assert_close(uniform, torch.full((2, 5, 3), 1 / 3))


def test_posterior_versions_from_before_prior_temperature_keep_the_router_prior_as_trained() -> None:
    saved = settings(POSTERIOR, 2, has_base=True)
    del saved["prior_temperature"]
    mixing, _ = from_manifest({"top_k": 2, "mixing": saved})
    assert mixing.prior_temperature == 1.0
    assert MixingConfig().prior_temperature != 1.0  # the default changed: old versions must not follow it


def test_saved_configs_from_before_prior_temperature_keep_the_router_prior_as_trained() -> None:
    text = to_yaml(Config())
    old = text.replace("    prior_temperature: 4.0\n", "")
    assert old != text
    assert config_from_yaml(old).model.mixing.prior_temperature == 1.0
    assert config_from_yaml(text).model.mixing.prior_temperature == 4.0


def test_score_batch_runs_a_dropped_candidate_on_the_first_bytes_only() -> None:
    """Under pruning, a candidate runs on a chunk's first prune_after bytes, and on the rest only in the
    rows where it is still live there: serving costs about `keep` candidates, and scores do not change."""
    moe = posterior_moe(replace(POSTERIOR, keep=1, threshold=0.3))
    calls: list[tuple[int, int]] = []  # (rows, bytes) of every candidate pass
    for model in moe.candidates:
        run = model.hidden
        model.hidden = lambda inputs, run=run: calls.append(tuple(inputs.shape)) or run(inputs)
    texts = [random_bytes(30, seed=s) for s in range(6)]  # one chunk each (block_size 32)
    batched = moe.score_batch(texts, max_rows=6)
    full = [c for c in calls if c[1] == 30]  # BOS + the first 29 bytes predict the 30
    assert all(c == (6, POSTERIOR.prune_after) for c in calls if c not in full)  # every candidate: the first bytes
    assert sum(rows for rows, _ in full) < 6 * len(moe.candidates)  # not every candidate in every row
    for alone, got in zip([moe.score(t) for t in texts], batched, strict=True):  # `score` runs every candidate
        assert got["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-5)
