"""Tests of moe_unlearn.models.router: strict causality, the learned prior, `grow`, `expert_weights`."""

import pytest
import torch

from moe_unlearn.config import RouterModelConfig
from moe_unlearn.data.examples import BOS, VOCAB
from moe_unlearn.models.router import NGRAM_BUCKETS, Router, byte_ngrams, expert_weights, ngram_buckets

CFG = RouterModelConfig(d_model=8, kernel=3, hidden=16, top_k=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def make_router(n_experts: int = 3, seed: int = 0, cfg: RouterModelConfig = CFG) -> Router:
    """A router with every parameter randomised (a fresh one has a zero prior and zero head bias)."""
    torch.manual_seed(seed)
    router = Router(cfg, n_experts)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return router.eval()


def random_inputs(batch: int, n_bytes: int, seed: int = 1) -> torch.Tensor:
    """BOS + n_bytes random bytes: inputs[:, 0] == BOS, inputs[:, t] == byte t-1."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (batch, n_bytes), generator=g)
    return torch.cat([torch.full((batch, 1), BOS), data], dim=1)


# --- forward ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_experts", [1, 3, 5])
def test_output_shape(n_experts: int) -> None:
    router = make_router(n_experts)
    assert router.n_experts == n_experts
    assert router(random_inputs(2, 9)).shape == (2, 10, n_experts)
    assert router(random_inputs(1, 1)).shape == (1, 2, n_experts)


@pytest.mark.parametrize("t", [0, 1, 2, 5, 11, 18])
def test_strictly_causal_logits_at_t_depend_only_on_bytes_before_t(t: int) -> None:
    router = make_router()
    n_bytes = 20
    inputs = random_inputs(2, n_bytes)
    changed = inputs.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 101) % VOCAB  # data byte t
    with torch.no_grad():
        before, after = router(inputs), router(changed)
    # positions 0..t (which predict bytes 0..t) have not seen byte t: bit-identical
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])
    # position t+1 has seen it
    for b in range(2):
        assert not torch.equal(before[b, t + 1], after[b, t + 1])
    assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])


def test_last_data_byte_is_seen_by_the_last_position_only() -> None:
    router = make_router()
    inputs = random_inputs(1, 12)
    changed = inputs.clone()
    changed[0, -1] = (changed[0, -1] + 1) % VOCAB
    with torch.no_grad():
        before, after = router(inputs), router(changed)
    assert torch.equal(before[:, :-1], after[:, :-1])
    assert not torch.equal(before[:, -1], after[:, -1])


def test_causal_prefix_forward_matches_full_forward() -> None:
    router = make_router()
    inputs = random_inputs(1, 30)
    with torch.no_grad():
        full = router(inputs)
        for length in (2, 3, 4, 17):
            torch.testing.assert_close(router(inputs[:, :length]), full[:, :length], rtol=1e-5, atol=1e-6)


def test_position_zero_is_the_learned_prior_for_any_input() -> None:
    router = make_router()
    with torch.no_grad():
        a = router(random_inputs(3, 15, seed=1))
        b = router(random_inputs(3, 15, seed=2))
        # same shape: bit-identical, and every row of a batch agrees
        assert torch.equal(a[:, 0], b[:, 0])
        assert torch.equal(a[0, 0], a[1, 0]) and torch.equal(a[0, 0], a[2, 0])
        # any length (BOS + one byte .. BOS + 40 bytes)
        short = router(random_inputs(1, 1, seed=4))[0, 0]
        torch.testing.assert_close(a[0, 0], short, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(router(random_inputs(1, 40, seed=3))[0, 0], short, rtol=1e-6, atol=1e-7)
        # and it is head(MLP(prior))
        torch.testing.assert_close(short, router.head(router.mlp(router.prior)), rtol=1e-6, atol=1e-7)
    # it moves with the prior parameter
    with torch.no_grad():
        router.prior.add_(1.0)
        assert not torch.equal(router(random_inputs(1, 1, seed=4))[0, 0], short)


@pytest.mark.parametrize("kernel", [1, 3])
def test_bos_alone_gives_the_prior(kernel: int) -> None:
    cfg = RouterModelConfig(d_model=8, kernel=kernel, hidden=16, top_k=2)
    router = make_router(cfg=cfg)
    with torch.no_grad():
        out = router(torch.tensor([[BOS], [BOS]]))
        assert out.shape == (2, 1, 3)
        torch.testing.assert_close(out[0, 0], router(random_inputs(1, 5))[0, 0], rtol=1e-6, atol=1e-7)


def test_running_mean_matches_definition() -> None:
    """logits_t = head(MLP((prior + sum_{s<t} u_s) / (t + 1))), u_s = GELU(conv over bytes s-k+1..s)."""
    router = make_router()
    data = [3, 250, 7, 7, 128, 0, 65]
    inputs = torch.tensor([[BOS, *data]])
    k = CFG.kernel
    with torch.no_grad():
        emb = router.embed.weight  # (257, C)
        w, bias = router.conv.weight, router.conv.bias  # (C, C, k), (C,)
        us = []
        for s in range(len(data)):
            acc = bias.clone()
            for j in range(k):  # tap j sees byte s - (k - 1) + j; earlier than byte 0 is zero padding
                src = s - (k - 1) + j
                if src >= 0:
                    acc = acc + w[:, :, j] @ emb[data[src]]
            us.append(torch.nn.functional.gelu(acc))
        expected = []
        for t in range(len(data) + 1):
            m = (router.prior + sum(us[:t], torch.zeros(CFG.d_model))) / (t + 1)
            expected.append(router.head(router.mlp(m)))
        torch.testing.assert_close(router(inputs)[0], torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_bos_embedding_row_is_unused() -> None:
    """The router embeds bytes only (BOS is position 0's marker): its BOS row has no effect."""
    router = make_router()
    inputs = random_inputs(2, 10)
    with torch.no_grad():
        before = router(inputs)
        router.embed.weight[BOS].add_(3.0)
        assert torch.equal(router(inputs), before)


def test_fresh_router_is_uniform_at_position_zero() -> None:
    """Zero prior, zero head bias, N(0, 0.02) head weights: before training, experts are nearly equally likely."""
    torch.manual_seed(0)
    router = Router(CFG, 4)
    logits = router(random_inputs(1, 6))[0, 0]
    torch.testing.assert_close(logits.softmax(-1), torch.full((4,), 0.25), rtol=0, atol=0.01)
    assert torch.equal(router.head.bias.detach(), torch.zeros(4))
    assert torch.equal(router.prior.detach(), torch.zeros(CFG.d_model))


def test_same_seed_same_router() -> None:
    torch.manual_seed(5)
    a = Router(CFG, 3).state_dict()
    torch.manual_seed(5)
    b = Router(CFG, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- grow ------------------------------------------------------------------------------------------


def test_grow_adds_exactly_one_head_row_and_keeps_everything_else() -> None:
    router = make_router(3)
    old = {k: v.clone() for k, v in router.state_dict().items()}
    bigger = router.grow(torch.Generator().manual_seed(7))
    assert isinstance(bigger, Router)
    assert bigger.n_experts == 4 and router.n_experts == 3
    new = bigger.state_dict()
    assert new.keys() == old.keys()
    for name in old:
        if name.startswith("head."):
            continue
        assert torch.equal(new[name], old[name]), name
    assert new["head.weight"].shape == (4, CFG.hidden)
    assert new["head.bias"].shape == (4,)
    assert torch.equal(new["head.weight"][:3], old["head.weight"])
    assert torch.equal(new["head.bias"][:3], old["head.bias"])
    assert new["head.bias"][3].item() == 0.0
    # the original is untouched and shares no storage with the copy
    for name, v in router.state_dict().items():
        assert torch.equal(v, old[name])
    with torch.no_grad():
        bigger.prior.add_(1.0)
    assert torch.equal(router.prior, old["prior"])


def test_grow_keeps_old_experts_logits() -> None:
    router = make_router(2)
    bigger = router.grow(torch.Generator().manual_seed(0))
    inputs = random_inputs(2, 13)
    with torch.no_grad():
        torch.testing.assert_close(bigger(inputs)[..., :2], router(inputs), rtol=1e-5, atol=1e-6)


def test_grow_new_row_depends_only_on_generator_seed() -> None:
    router = make_router(2)
    torch.manual_seed(1)
    a = router.grow(torch.Generator().manual_seed(42)).head.weight[-1].detach()
    torch.manual_seed(999)  # a different global RNG state does not matter
    torch.rand(17)
    b = router.grow(torch.Generator().manual_seed(42)).head.weight[-1].detach()
    assert torch.equal(a, b)
    expected = torch.randn(1, CFG.hidden, generator=torch.Generator().manual_seed(42))[0] * 0.02
    assert torch.equal(a, expected)
    c = router.grow(torch.Generator().manual_seed(43)).head.weight[-1].detach()
    assert not torch.equal(a, c)
    # nor on the other rows: a different router gets the same new row from the same seed
    other = make_router(2, seed=5).grow(torch.Generator().manual_seed(42)).head.weight[-1].detach()
    assert torch.equal(a, other)


def test_grow_twice() -> None:
    router = make_router(1)
    grown = router.grow(torch.Generator().manual_seed(0)).grow(torch.Generator().manual_seed(1))
    assert grown.n_experts == 3
    assert grown(random_inputs(1, 4)).shape == (1, 5, 3)
    assert torch.equal(grown.head.weight[0], router.head.weight[0])


# --- expert_weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("top_k", [1, 2, 3, 5, 8])
def test_expert_weights_keeps_the_top_k_and_renormalises(n: int, top_k: int) -> None:
    logits = torch.randn(4, 7, n, generator=torch.Generator().manual_seed(n * 10 + top_k)) * 3
    w = expert_weights(logits, top_k)
    k = min(top_k, n)
    assert w.shape == logits.shape
    assert w.dtype == torch.float32
    assert ((w != 0).sum(-1) == k).all()
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 7))
    kept = w != 0
    # every kept logit is at least as large as every dropped one
    smallest_kept = logits.masked_fill(~kept, float("inf")).amin(-1)
    largest_dropped = logits.masked_fill(kept, float("-inf")).amax(-1)
    assert (smallest_kept >= largest_dropped).all()
    # the kept ones are exactly the top-k indices
    top = logits.topk(k, dim=-1).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, top, True))
    # renormalised softmax over the kept ones
    expected = logits.masked_fill(~kept, float("-inf")).softmax(-1)
    torch.testing.assert_close(w, expected)
    if top_k >= n:
        torch.testing.assert_close(w, logits.softmax(-1))


def test_expert_weights_numbers() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.15, 0.25]]))
    torch.testing.assert_close(expert_weights(logits, 1), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(expert_weights(logits, 2), torch.tensor([[0.0, 0.5 / 0.75, 0.0, 0.25 / 0.75]]))
    torch.testing.assert_close(expert_weights(logits, 3), torch.tensor([[0.0, 0.5, 0.15, 0.25]]) / 0.9)
    torch.testing.assert_close(expert_weights(logits, 4), torch.tensor([[0.1, 0.5, 0.15, 0.25]]))


def test_expert_weights_casts_to_float32() -> None:
    logits = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    w = expert_weights(logits, 2)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))


@pytest.mark.parametrize("prefix_bytes", [0, 1, 2, 5, 40])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_continuation_features_equal_the_full_features(prefix_bytes: int, n: int) -> None:
    """Canary scoring reads the shared prefix once; the result must be the full computation's."""
    router = make_router()
    head = random_inputs(1, prefix_bytes, seed=3)  # BOS + prefix
    tails = torch.randint(0, VOCAB, (6, n - 1), generator=torch.Generator().manual_seed(4))
    full = router.features(torch.cat([head.expand(6, -1), tails], dim=1))[:, prefix_bytes:]
    assert torch.allclose(router.continuation_features(head, tails), full, atol=1e-6)


def test_byte_ngrams_are_the_bigram_and_trigram_ending_at_each_input() -> None:
    inputs = torch.tensor([[BOS, 7, 8, 9, 7, 8, 9, 1]])
    grams = byte_ngrams(inputs)
    assert grams.shape == (1, 8, NGRAM_BUCKETS)
    assert torch.equal(grams.abs().sum(-1), torch.full((1, 8), 2.0))  # two signed indicators (unless they cancel)
    assert torch.equal(grams[0, 3], grams[0, 6])  # (7, 8, 9) and (8, 9) at both places
    assert not torch.equal(grams[0, 2], grams[0, 5])  # (BOS, 7, 8) is not (9, 7, 8)
    assert torch.equal(grams, byte_ngrams(inputs.clone()))  # a pure function of the bytes


def test_byte_ngrams_at_t_depend_only_on_inputs_up_to_t() -> None:
    a = torch.tensor([[BOS, 1, 2, 3, 4, 5]])
    b = a.clone()
    b[0, 4] = 200
    assert torch.equal(byte_ngrams(a)[:, :4], byte_ngrams(b)[:, :4])
    assert not torch.equal(byte_ngrams(a)[:, 4:7], byte_ngrams(b)[:, 4:7])


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_byte_ngrams_of_a_continuation_with_its_context_equal_the_whole_inputs(split: int) -> None:
    inputs = torch.tensor([[BOS, 11, 12, 13, 14, 15, 16]])
    whole = byte_ngrams(inputs)
    assert torch.equal(byte_ngrams(inputs[:, split:], context=inputs[:, :split]), whole[:, split:])


def test_ngram_buckets_are_byte_ngrams_one_position_at_a_time() -> None:
    """The decoder's per-byte n-grams (Python integers) equal the batched features, position by position."""
    inputs = torch.randint(0, VOCAB + 1, (3, 40), generator=torch.Generator().manual_seed(0))
    full = byte_ngrams(inputs)
    padded = torch.cat([torch.full((3, 2), VOCAB + 1), inputs], dim=1).tolist()
    for t in range(inputs.shape[1]):
        row, bucket, sign = ngram_buckets([window[t : t + 3] for window in padded])
        at_t = torch.zeros(3, NGRAM_BUCKETS).index_put((row, bucket), sign + 0.0, accumulate=True)
        assert torch.equal(at_t, full[:, t])
