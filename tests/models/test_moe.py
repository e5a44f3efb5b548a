"""Tests of moe_unlearn.models.moe: the mixture's likelihoods, chunked scoring, routing and sampling."""

import math

import pytest
import torch

from moe_unlearn.config import ExpertModelConfig, RouterModelConfig
from moe_unlearn.data.examples import BOS, VOCAB, chunks, lm_example
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.models.router import Router, expert_weights

EXPERT = ExpertModelConfig(n_layer=1, n_head=2, d_model=16, block_size=32)
ROUTER = RouterModelConfig(d_model=8, kernel=3, hidden=16, top_k=2)
NAMES = ("code", "news", "recipes")
BS = EXPERT.block_size


pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def make_moe(top_k: int = 2, seed: int = 0) -> MixtureOfExperts:
    """Three random experts (perturbed away from their near-uniform init) and a random 3-way router whose
    choice changes along a sequence."""
    torch.manual_seed(seed)
    experts = {}
    for name in NAMES:
        e = ByteTransformer(EXPERT)
        with torch.no_grad():
            for p in e.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        experts[name] = e
    router = Router(ROUTER, len(NAMES))
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        router.head.bias.zero_()  # so that the bytes, not a constant bias, decide the expert
        router.embed.weight.mul_(4)
    return MixtureOfExperts(experts=experts, router=router, top_k=top_k).eval()


def random_bytes(n: int, seed: int = 1) -> bytes:
    return bytes(torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist())


def bos_inputs(data: bytes) -> torch.Tensor:
    return torch.tensor([[BOS, *data]])


@pytest.fixture(scope="module")
def moe() -> MixtureOfExperts:
    return make_moe()


# --- construction and forward ----------------------------------------------------------------------


def test_router_outputs_must_match_experts() -> None:
    torch.manual_seed(0)
    experts = {n: ByteTransformer(EXPERT) for n in NAMES}
    with pytest.raises(ValueError, match="2 outputs for 3 experts"):
        MixtureOfExperts(experts=experts, router=Router(ROUTER, 2), top_k=2)


def test_names_and_block_size() -> None:
    torch.manual_seed(0)
    small = ExpertModelConfig(n_layer=1, n_head=2, d_model=16, block_size=16)
    experts = {"a": ByteTransformer(EXPERT), "b": ByteTransformer(small)}
    m = MixtureOfExperts(experts=experts, router=Router(ROUTER, 2), top_k=1)
    assert m.names == ["a", "b"]
    assert m.block_size == 16  # the smallest expert's


def test_forward_shapes_and_weights(moe: MixtureOfExperts) -> None:
    inputs = torch.cat([bos_inputs(random_bytes(19, seed=s)) for s in (1, 2)])
    with torch.no_grad():
        log_p, weights = moe(inputs)
        assert log_p.shape == (2, 20, 256) and weights.shape == (2, 20, 3)
        assert torch.equal(weights, expert_weights(moe.router(inputs), 2))
    assert ((weights != 0).sum(-1) == 2).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 20))


def test_forward_log_probs_are_normalised(moe: MixtureOfExperts) -> None:
    inputs = bos_inputs(random_bytes(BS - 1))
    with torch.no_grad():
        log_p, _ = moe(inputs)
    assert torch.isfinite(log_p).all()
    assert (log_p <= 0).all()
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(1, BS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_forward_is_the_weighted_mixture_of_expert_probabilities(top_k: int) -> None:
    m = make_moe(top_k=top_k)
    inputs = bos_inputs(random_bytes(24, seed=3))
    with torch.no_grad():
        log_p, weights = m(inputs)
        w = expert_weights(m.router(inputs), top_k)[0]  # (T, 3)
        probs = torch.stack([e(inputs)[0].softmax(-1) for e in m.experts], dim=1)  # (T, 3, 256)
        expected = (w[..., None] * probs).sum(1).log()
    torch.testing.assert_close(log_p[0], expected, rtol=1e-5, atol=1e-5)
    if top_k == 3:  # all experts: plain softmax routing
        torch.testing.assert_close(weights, m.router(inputs).softmax(-1))


def test_top_1_mixture_is_the_chosen_expert() -> None:
    m = make_moe(top_k=1)
    inputs = bos_inputs(random_bytes(BS - 1, seed=4))  # the router picks each of the 3 experts somewhere
    with torch.no_grad():
        log_p, weights = m(inputs)
        chosen = m.router(inputs)[0].argmax(-1)  # (T,)
        per_expert = [e(inputs)[0].float().log_softmax(-1) for e in m.experts]
    assert set(chosen.tolist()) == {0, 1, 2}, "pick inputs where the router switches experts"
    for t, e in enumerate(chosen.tolist()):
        assert weights[0, t, e] == 1.0 and weights[0, t].sum() == 1.0
        torch.testing.assert_close(log_p[0, t], per_expert[e][t], rtol=0, atol=1e-6)


def test_experts_the_router_never_picks_do_not_run() -> None:
    m = make_moe(top_k=1)
    with torch.no_grad():
        m.router.head.bias[0] = 100.0  # expert 0 everywhere

    def unused(inputs):
        raise AssertionError("an expert with zero weight everywhere ran")

    for expert in m.experts[1:]:
        expert.forward = unused
    inputs = bos_inputs(random_bytes(24, seed=5))
    with torch.no_grad():
        log_p, _ = m(inputs)
        expected = m.experts[0](inputs).float().log_softmax(-1)
    torch.testing.assert_close(log_p, expected, rtol=0, atol=1e-6)


# --- score -----------------------------------------------------------------------------------------


def manual_score(m: MixtureOfExperts, data: bytes) -> tuple[float, list[float]]:
    """Bits per byte and mean expert weights from forward, chunk by chunk (BOS starts every chunk)."""
    nats, weight_sum = 0.0, torch.zeros(len(m.names), dtype=torch.float64)
    with torch.no_grad():
        for chunk in chunks(data, m.block_size):
            inputs, targets = lm_example(chunk)
            assert inputs[0] == BOS and len(inputs) == len(chunk) <= m.block_size
            log_p, weights = m(inputs[None])
            for t, byte in enumerate(chunk):
                nats -= log_p[0, t, byte].item()
            weight_sum += weights[0].double().sum(0)
    return nats / math.log(2) / len(data), (weight_sum / len(data)).tolist()


@pytest.mark.parametrize("n", [2, 5, BS - 1, BS, BS + 2, 2 * BS, 2 * BS + 11, 3 * BS + 30])
def test_score_equals_manual_chunked_computation(moe: MixtureOfExperts, n: int) -> None:
    data = random_bytes(n, seed=n)
    result = moe.score(data)
    bpb, weights = manual_score(moe, data)
    assert result["bytes"] == n
    assert math.isclose(result["bits_per_byte"], bpb, rel_tol=1e-5)
    assert list(result["expert_weights"]) == list(NAMES)
    for name, w in zip(NAMES, weights, strict=True):
        assert math.isclose(result["expert_weights"][name], w, rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(sum(result["expert_weights"].values()), 1.0, rel_tol=1e-5)
    assert all(w >= 0 for w in result["expert_weights"].values())


def test_score_is_additive_over_whole_chunks(moe: MixtureOfExperts) -> None:
    """Each chunk restarts from BOS: bits(a + b) = bits(a) + bits(b) when len(a) is a multiple of block_size."""
    a, b = random_bytes(2 * BS, seed=7), random_bytes(20, seed=8)
    whole = moe.score(a + b)
    parts = moe.score(a)["bits_per_byte"] * len(a) + moe.score(b)["bits_per_byte"] * len(b)
    assert math.isclose(whole["bits_per_byte"] * len(a + b), parts, rel_tol=1e-5)
    # but not over a cut inside a chunk (context is lost)
    c, d = (a + b)[:10], (a + b)[10:BS]
    split = moe.score(c)["bits_per_byte"] * 10 + moe.score(d)["bits_per_byte"] * (BS - 10)
    assert not math.isclose(moe.score((a + b)[:BS])["bits_per_byte"] * BS, split, rel_tol=1e-6)


def test_score_of_uniform_model_is_8_bits_per_byte() -> None:
    m = make_moe()
    with torch.no_grad():
        for e in m.experts:  # zero output embeddings -> uniform over the 256 bytes
            e.tok.weight.zero_()
    result = m.score(random_bytes(70))
    assert math.isclose(result["bits_per_byte"], 8.0, rel_tol=1e-6)


def test_score_empty(moe: MixtureOfExperts) -> None:
    result = moe.score(b"")
    assert math.isnan(result["bits_per_byte"])
    assert result["bytes"] == 0
    assert result["expert_weights"] == dict.fromkeys(NAMES, 0.0)


@pytest.mark.parametrize("n", [1, BS + 1])
def test_score_with_a_one_byte_last_chunk(moe: MixtureOfExperts, n: int) -> None:
    data = random_bytes(n, seed=n)
    result = moe.score(data)
    assert math.isclose(result["bits_per_byte"], manual_score(moe, data)[0], rel_tol=1e-5)


@pytest.mark.parametrize("max_rows", [1, 3, 64])
def test_score_batch_equals_scoring_each_text_alone(moe: MixtureOfExperts, max_rows: int) -> None:
    texts = [random_bytes(n, seed=n) for n in (1, 5, BS - 1, BS, BS + 1, 3 * BS + 7)]  # 1 to 4 chunks, padded
    for got, text in zip(moe.score_batch(texts, max_rows=max_rows), texts, strict=True):
        alone = moe.score(text)
        assert got["bytes"] == alone["bytes"] == len(text)
        assert got["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-5)
        assert got["expert_weights"] == pytest.approx(alone["expert_weights"], abs=1e-6)


def test_score_batch_of_nothing(moe: MixtureOfExperts) -> None:
    assert moe.score_batch([]) == []
    assert math.isnan(moe.score_batch([b""])[0]["bits_per_byte"])


# --- route -----------------------------------------------------------------------------------------


def test_route_is_the_router_softmax_after_the_whole_prefix(moe: MixtureOfExperts) -> None:
    prefixes = [random_bytes(n, seed=n) for n in (1, 6, BS - 1)]
    probs = moe.route(prefixes)
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    with torch.no_grad():
        for i, p in enumerate(prefixes):
            torch.testing.assert_close(probs[i], moe.router(bos_inputs(p))[0, -1].softmax(-1))


def test_route_keeps_the_last_block_size_minus_one_bytes(moe: MixtureOfExperts) -> None:
    long = random_bytes(3 * BS + 5, seed=9)
    torch.testing.assert_close(moe.route([long]), moe.route([long[-(BS - 1) :]]))
    assert not torch.allclose(moe.route([long]), moe.route([long[-(BS - 2) :]]))


def test_route_empty_prefix_is_the_prior(moe: MixtureOfExperts) -> None:
    probs = moe.route([b""])
    torch.testing.assert_close(probs[0], moe.router(bos_inputs(b"x"))[0, 0].softmax(-1))


# --- generate --------------------------------------------------------------------------------------


def greedy_reference(m: MixtureOfExperts, prompt: bytes, steps: int) -> bytes:
    """argmax chain by hand: BOS + the bytes of the text's current block_size chunk, next byte = argmax."""
    data = bytearray(prompt)
    with torch.no_grad():
        for _ in range(steps):
            context = data[len(data) - len(data) % m.block_size :]
            log_p, _ = m(bos_inputs(bytes(context)))
            data.append(int(log_p[0, -1].argmax()))
    return bytes(data[len(prompt) :])


@pytest.mark.parametrize("n", [0, 1, 7, BS + 8])
def test_generate_returns_exactly_max_new_bytes(moe: MixtureOfExperts, n: int) -> None:
    out, weights = moe.generate(b"hello", n, seed=3)
    assert isinstance(out, bytes) and len(out) == n
    assert list(weights) == list(NAMES)
    if n:
        assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-5)
    else:
        assert all(w == 0.0 for w in weights.values())


def test_generate_same_seed_same_bytes_different_seed_different_bytes(moe: MixtureOfExperts) -> None:
    a, wa = moe.generate(b"The ", 24, temperature=1.0, seed=11)
    b, wb = moe.generate(b"The ", 24, temperature=1.0, seed=11)
    c, _ = moe.generate(b"The ", 24, temperature=1.0, seed=12)
    assert a == b and wa == wb
    assert a != c
    assert len(a) == len(c) == 24


def test_generate_does_not_use_the_global_rng(moe: MixtureOfExperts) -> None:
    torch.manual_seed(0)
    a, _ = moe.generate(b"x", 10, seed=5)
    after_a = torch.rand(3)
    torch.manual_seed(123)
    b, _ = moe.generate(b"x", 10, seed=5)
    torch.manual_seed(0)
    assert a == b
    assert torch.equal(torch.rand(3), after_a)


@pytest.mark.parametrize("prompt_len", [1, 10, BS - 1, BS, 2 * BS + 3])
def test_temperature_zero_is_greedy(moe: MixtureOfExperts, prompt_len: int) -> None:
    prompt = random_bytes(prompt_len, seed=20 + prompt_len)
    out, _ = moe.generate(prompt, 6, temperature=0.0, seed=1)
    assert out == greedy_reference(moe, prompt, 6)
    assert out == moe.generate(prompt, 6, temperature=0.0, seed=2)[0]  # seed is irrelevant


def test_top_k_1_sampling_is_greedy(moe: MixtureOfExperts) -> None:
    prompt = random_bytes(12, seed=30)
    assert moe.generate(prompt, 8, temperature=1.0, top_k=1, seed=4)[0] == greedy_reference(moe, prompt, 8)


def test_generate_with_a_prompt_longer_than_block_size(moe: MixtureOfExperts) -> None:
    prompt = random_bytes(3 * BS + 7, seed=40)
    out, weights = moe.generate(prompt, BS + 4, temperature=1.0, seed=0)
    assert len(out) == BS + 4
    assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-5)
    # only the prompt's last, unfinished chunk matters (the window rule of score)
    assert out == moe.generate(prompt[-7:], BS + 4, temperature=1.0, seed=0)[0]


def test_generate_weights_are_the_mean_router_weights(moe: MixtureOfExperts) -> None:
    prompt = b"abc"
    out, weights = moe.generate(prompt, 5, temperature=0.0)
    total = torch.zeros(3)
    with torch.no_grad():
        for i in range(5):
            total += moe(bos_inputs(prompt + out[:i]))[1][0, -1]
    for name, w in zip(NAMES, (total / 5).tolist(), strict=True):
        assert math.isclose(weights[name], w, rel_tol=1e-5)


def test_generate_with_an_empty_prompt(moe: MixtureOfExperts) -> None:
    out, weights = moe.generate(b"", 5, temperature=0.0)
    assert len(out) == 5
    assert out == greedy_reference(moe, b"", 5)


def test_sample_yields_the_bytes_and_weights_of_generate_one_at_a_time(moe: MixtureOfExperts) -> None:
    steps = list(moe.sample(b"abc", 9, temperature=0.9, top_k=5, seed=4))
    out, weights = moe.generate(b"abc", 9, temperature=0.9, top_k=5, seed=4)
    assert bytes(b for b, _ in steps) == out
    means = (torch.stack([w for _, w in steps]).sum(0) / 9).tolist()
    assert dict(zip(NAMES, means, strict=True)) == pytest.approx(weights, rel=1e-6)


# --- continuation_log_probs (canary candidates after one shared prefix) ----------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_continuation_log_probs_equal_the_full_forward_for_each_candidate(moe: MixtureOfExperts, n: int) -> None:
    prefix = b"Door code: "
    candidates = [random_bytes(n, seed=s) for s in range(5)]
    got = moe.continuation_log_probs(prefix, candidates, batch_size=2)  # batches of 2, 2 and 1
    for lp, cont in zip(got.tolist(), candidates, strict=True):
        whole, _ = moe.byte_log_probs(prefix + cont)
        assert lp == pytest.approx(whole[len(prefix) :].double().sum().item(), abs=1e-4)


def test_expert_extend_matches_the_full_forward() -> None:
    torch.manual_seed(0)
    expert = ByteTransformer(ExpertModelConfig(n_layer=2, n_head=2, d_model=16, block_size=32)).eval()
    prefix, tails = bos_inputs(b"abc"), torch.randint(0, VOCAB, (3, 4))
    _, cache = expert.prefill(prefix)
    full = expert(torch.cat([prefix.expand(3, -1), tails], dim=1))[:, prefix.shape[1] :]
    torch.testing.assert_close(expert.logits(expert.extend(cache, tails)), full, rtol=1e-5, atol=1e-5)


def test_continuations_must_share_a_length_and_fit_the_context(moe: MixtureOfExperts) -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        moe.continuation_log_probs(b"x", [b"ab", b"abc"])
    with pytest.raises(ValueError, match="context"):
        moe.continuation_log_probs(b"x" * moe.block_size, [b"ab"])
