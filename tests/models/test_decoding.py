"""Tests of moe_unlearn.models.decoding: cached generation describes the same model as `score`.

Every mixture kind is covered: the router's top-k, the posterior without and with a base, and a router
on the base's features (which makes the base run on every byte)."""

import math

import pytest
import torch

from moe_unlearn.config import MixingConfig, RouterModelConfig
from moe_unlearn.models.decoding import Decoder, draw, draw_rows
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.models.router import FeatureRouter, feature_size
from tests.models.test_mixing import POSTERIOR, posterior_moe
from tests.models.test_moe import BS, EXPERT, make_moe, random_bytes

pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def feature_moe() -> MixtureOfExperts:
    posterior = posterior_moe()
    experts = dict(zip(posterior.names, posterior.experts, strict=False))  # names end with the base
    torch.manual_seed(8)
    router = FeatureRouter(RouterModelConfig(hidden=16), feature_size(EXPERT.d_model), len(experts))
    with torch.no_grad():
        for p in router.parameters():
            p.add_(torch.randn_like(p))  # a prior far from uniform, so the features matter
    return MixtureOfExperts(experts=experts, router=router, top_k=2, mixing=POSTERIOR, base=posterior.base).eval()


def feature_moe_router_rule() -> MixtureOfExperts:
    m = feature_moe()
    experts = dict(zip(m.names, m.experts, strict=False))
    return MixtureOfExperts(experts=experts, router=m.router, top_k=2, base=m.base).eval()


KINDS = {
    "router top-2": lambda: make_moe(top_k=2),
    "router top-1": lambda: make_moe(top_k=1),
    "posterior, no base": lambda: posterior_moe(base=False),
    "posterior, base": posterior_moe,
    "posterior, no pruning": lambda: posterior_moe(MixingConfig(rule="posterior", threshold=0.0)),
    "features, posterior": feature_moe,
    "features, router rule": feature_moe_router_rule,
}


@pytest.fixture(scope="module", params=list(KINDS))
def moe(request) -> MixtureOfExperts:
    return KINDS[request.param]()


@pytest.mark.parametrize("prompt_len", [0, 1, 9, BS - 12])
def test_greedy_cached_output_equals_the_uncached_reference_within_one_block(
    moe: MixtureOfExperts, prompt_len: int
) -> None:
    prompt = random_bytes(prompt_len, seed=3 + prompt_len)
    n = BS - prompt_len
    cached = list(moe.sample(prompt, n, temperature=0.0))
    uncached = list(moe.sample(prompt, n, temperature=0.0, cached=False))
    assert bytes(b for b, _ in cached) == bytes(b for b, _ in uncached)
    for (_, w), (_, w_ref) in zip(cached, uncached, strict=True):
        torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prompt_len", [0, 5, BS, BS + 3])
def test_sampled_log_probs_equal_score_across_chunk_ends(moe: MixtureOfExperts, prompt_len: int) -> None:
    """The distribution each byte was drawn from gives it the log p `score` computes for the whole text,
    across several chunk ends (the window rule)."""
    prompt = random_bytes(prompt_len, seed=40)
    decoder = Decoder(moe)
    log_p, _ = decoder.start(0, prompt)
    generator, drawn, got = torch.Generator().manual_seed(5), [], []
    for _ in range(2 * BS + 7):
        byte = int(torch.multinomial(log_p.exp(), 1, generator=generator))
        drawn.append(byte)
        got.append(log_p[byte].item())
        log_p, _ = (t[0] for t in decoder.advance([0], [byte]))
    expected, _ = moe.byte_log_probs(prompt + bytes(drawn))
    torch.testing.assert_close(torch.tensor(got), expected[prompt_len:], atol=1e-4, rtol=1e-4)


def test_a_chunk_end_starts_afresh(moe: MixtureOfExperts) -> None:
    """After a prompt of exactly block_size bytes, the next byte is predicted from BOS alone."""
    fresh, _ = Decoder(moe).start(0, b"")
    after_a_block, _ = Decoder(moe).start(0, random_bytes(BS, seed=8))
    after_two, _ = Decoder(moe).start(0, random_bytes(2 * BS + 4, seed=8)[: 2 * BS])
    torch.testing.assert_close(after_a_block, fresh)
    torch.testing.assert_close(after_two, fresh)


def test_only_the_current_chunk_of_the_prompt_matters(moe: MixtureOfExperts) -> None:
    tail = random_bytes(7, seed=9)
    a = moe.generate(random_bytes(BS, seed=1) + tail, 12, temperature=0.0)[0]
    b = moe.generate(random_bytes(BS, seed=2) + tail, 12, temperature=0.0)[0]
    assert a == b == moe.generate(tail, 12, temperature=0.0)[0]


def test_slots_decode_independently(moe: MixtureOfExperts) -> None:
    """Rows of one batched step, at different positions and chunk ends, get what each would alone."""
    prompts = [random_bytes(n, seed=n) for n in (0, 3, BS - 2, BS - 1, 17)]
    together = Decoder(moe, slots=len(prompts))
    alone = [Decoder(moe) for _ in prompts]
    next_together = [together.start(i, p)[0] for i, p in enumerate(prompts)]
    next_alone = [d.start(0, p)[0] for d, p in zip(alone, prompts, strict=True)]
    order = [4, 0, 2, 1, 3]  # a step over slots in any order, some skipped
    for step in range(BS + 3):
        slots = order if step % 3 else order[1:4]
        byte = [int(next_together[s].argmax()) for s in slots]
        log_p, weights = together.advance(slots, byte)
        for row, s in enumerate(slots):
            torch.testing.assert_close(next_together[s], next_alone[s], atol=1e-5, rtol=1e-4)
            ref_p, ref_w = (t[0] for t in alone[s].advance([0], [byte[row]]))
            torch.testing.assert_close(log_p[row], ref_p, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(weights[row], ref_w, atol=1e-5, rtol=1e-4)
            next_together[s], next_alone[s] = log_p[row], ref_p


def test_cached_sampling_is_seeded(moe: MixtureOfExperts) -> None:
    a = moe.generate(b"The ", 40, temperature=0.8, top_k=20, seed=3)
    assert a == moe.generate(b"The ", 40, temperature=0.8, top_k=20, seed=3)
    assert a[0] != moe.generate(b"The ", 40, temperature=0.8, top_k=20, seed=4)[0]


def test_an_invariant_decoder_row_is_bit_for_bit_independent_of_the_other_rows(moe: MixtureOfExperts) -> None:
    """The server's batching: one sequence's log-probs and weights, to the last bit, whether it decodes in
    slot 0 beside idle slots or in slot 5 beside other sequences at other positions; and equal to the
    plain decoder's within rounding."""
    prompt, others = random_bytes(9, seed=21), [random_bytes(n, seed=n) for n in (0, 3, BS - 2, 17, 30, 2, BS - 1)]
    steps = BS + 5  # across a chunk end

    def decode(slot: int, neighbours: list[bytes]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        decoder = Decoder(moe, slots=8, invariant=True)
        for i, other in enumerate(neighbours):
            decoder.start(i if i < slot else i + 1, other)
        log_p, w = decoder.start(slot, prompt)
        out, inputs = [(log_p, w)], [0] * 8
        for step in range(steps):
            inputs = [(step * 7 + i) % 256 for i in range(8)]  # the neighbours' bytes: anything
            inputs[slot] = int(out[-1][0].argmax())
            log_p, w = decoder.advance(list(range(8)), inputs)
            out.append((log_p[slot].clone(), w[slot].clone()))
        return out

    alone, among = decode(0, []), decode(5, others)
    for (p, w), (q, v) in zip(alone, among, strict=True):
        assert torch.equal(p, q) and torch.equal(w, v)
    plain = Decoder(moe)
    log_p, w = plain.start(0, prompt)
    for p, weights in alone[:-1]:
        torch.testing.assert_close(p, log_p, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(weights, w, atol=1e-5, rtol=1e-4)
        log_p, w = (t[0] for t in plain.advance([0], [int(p.argmax())]))
    with pytest.raises(ValueError, match="every slot"):
        Decoder(moe, slots=2, invariant=True).advance([1], [0])


def test_draw_rows_draws_what_draw_draws_row_by_row() -> None:
    """The engine's batched sampler: for every row the byte `draw` gives with the same generator state."""
    torch.manual_seed(0)
    log_p = torch.randn(64, 256).mul(3).log_softmax(-1)
    log_p[5, 10:] = -math.inf  # a row with little support
    temperature = torch.tensor([0.0, 0.3, 1.0, 2.5] * 16)
    top_k = torch.tensor([0, 0, 1, 5, 40, 256, 0, 3] * 8)
    seeds = list(range(64))
    singles, uniforms = [], []
    for row, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        singles.append(draw(log_p[row], float(temperature[row]), int(top_k[row]), g))
        uniforms.append(torch.rand(1, generator=torch.Generator().manual_seed(seed)))
    batched = draw_rows(log_p, temperature, top_k, torch.cat(uniforms))
    assert batched.tolist() == singles
