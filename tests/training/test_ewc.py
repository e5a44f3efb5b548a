"""Tests of moe_unlearn.training.ewc: the exact Fisher against brute-force autograd, the penalty, accumulate."""

import pytest
import torch

from moe_unlearn.config import RouterModelConfig
from moe_unlearn.data.examples import BOS, VOCAB
from moe_unlearn.models.router import Router
from moe_unlearn.training.ewc import accumulate, ewc_penalty, fisher_diagonal

CFG = RouterModelConfig(d_model=8, kernel=3, hidden=16, top_k=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def make_router(n_experts: int = 3, seed: int = 0) -> Router:
    """A router with every parameter randomised, so that no Fisher entry is trivially zero."""
    torch.manual_seed(seed)
    router = Router(CFG, n_experts)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return router


def sample_inputs(lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    """Router inputs BOS + n random bytes, one per length (lengths count the bytes)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.tensor([BOS]), torch.randint(0, VOCAB, (n,), generator=g)]) for n in lengths]


def brute_force_fisher(router: Router, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """F = mean_n sum_c p_c g_c^2, g_c = d log_softmax(router(x)[last])[c] / d theta, one autograd call each."""
    params = dict(router.named_parameters())
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    for x in inputs:
        log_p = router(x[None])[0, len(x) - 1].log_softmax(-1)
        for c in range(log_p.shape[0]):
            grads = torch.autograd.grad(log_p[c], list(params.values()), retain_graph=True, allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    fisher[name] += log_p[c].exp().detach() * g.detach() ** 2
    return {k: v / len(inputs) for k, v in fisher.items()}


def brute_force_position_zero(router: Router) -> dict[str, torch.Tensor]:
    """The Fisher of position 0 (the learned prior, the decision after an empty prefix), by plain autograd."""
    params = dict(router.named_parameters())
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    log_p = router(torch.tensor([[BOS, 7]]))[0, 0].log_softmax(-1)
    for c in range(log_p.shape[0]):
        grads = torch.autograd.grad(log_p[c], list(params.values()), retain_graph=True, allow_unused=True)
        for (name, _), g in zip(params.items(), grads, strict=True):
            if g is not None:
                fisher[name] += log_p[c].exp().detach() * g.detach() ** 2
    return fisher


LENGTHS = [1, 2, 5, 9, 16, 3]  # different lengths, batched with right padding inside fisher_diagonal


@pytest.fixture(scope="module")
def router() -> Router:
    return make_router()


@pytest.fixture(scope="module")
def reference(router: Router) -> dict[str, torch.Tensor]:
    return brute_force_fisher(router, sample_inputs(LENGTHS))


# --- fisher_diagonal -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [32, 4, 1])
def test_fisher_equals_brute_force_autograd(router: Router, reference: dict, chunk: int) -> None:
    fisher = fisher_diagonal(router, sample_inputs(LENGTHS), chunk=chunk)
    assert fisher.keys() == reference.keys() == dict(router.named_parameters()).keys()
    for name in reference:
        assert fisher[name].shape == reference[name].shape, name
        torch.testing.assert_close(fisher[name], reference[name], rtol=1e-4, atol=1e-7, msg=name)


def test_fisher_is_nonnegative_and_not_trivial(router: Router) -> None:
    fisher = fisher_diagonal(router, sample_inputs(LENGTHS))
    for name, f in fisher.items():
        assert (f >= 0).all(), name
        assert torch.isfinite(f).all(), name
    for name in ("embed.weight", "conv.weight", "conv.bias", "prior", "mlp.1.weight", "head.weight", "head.bias"):
        assert fisher[name].sum() > 0, name


def test_fisher_ignores_the_padding_and_the_bos_row(router: Router) -> None:
    """Padding bytes (0) never reach a scored position; the BOS embedding row is never used."""
    inputs = sample_inputs([4, 4, 12])
    for x in inputs:
        x[1:] = torch.clamp(x[1:], min=1)  # byte 0 appears only as padding (the short ones padded to 13)
    fisher = fisher_diagonal(router, inputs)
    assert fisher["embed.weight"][1:VOCAB].sum() > 0
    assert torch.equal(fisher["embed.weight"][0], torch.zeros(CFG.d_model))
    assert torch.equal(fisher["embed.weight"][BOS], torch.zeros(CFG.d_model))
    seen = {int(b) for x in inputs for b in x[1:]}
    unseen = [b for b in range(VOCAB) if b not in seen]
    assert torch.equal(fisher["embed.weight"][unseen], torch.zeros(len(unseen), CFG.d_model))


def test_fisher_is_a_mean_over_samples(router: Router) -> None:
    a, b = sample_inputs([3, 7], seed=2), sample_inputs([5], seed=3)
    fa, fb, fab = fisher_diagonal(router, a), fisher_diagonal(router, b), fisher_diagonal(router, a + b)
    for name in fab:
        torch.testing.assert_close(fab[name], (2 * fa[name] + fb[name]) / 3, rtol=1e-5, atol=1e-8)


def test_fisher_of_a_single_output_router_is_zero() -> None:
    """Stage 0: one expert, p = 1 always, nothing to protect."""
    fisher = fisher_diagonal(make_router(1), sample_inputs([4, 8]))
    for name, f in fisher.items():
        assert torch.equal(f, torch.zeros_like(f)), name


def test_fisher_of_no_inputs_is_zero(router: Router) -> None:
    fisher = fisher_diagonal(router, [])
    assert fisher.keys() == dict(router.named_parameters()).keys()
    assert all(torch.equal(f, torch.zeros_like(f)) for f in fisher.values())


def test_fisher_leaves_the_router_unchanged(router: Router) -> None:
    before = {k: v.clone() for k, v in router.state_dict().items()}
    fisher_diagonal(router, sample_inputs([3, 6]))
    for name, v in router.state_dict().items():
        assert torch.equal(v, before[name]), name
    assert all(p.grad is None for p in router.parameters())


# --- ewc_penalty -----------------------------------------------------------------------------------


def anchor_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def random_fisher(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) for k, v in model.named_parameters()}


def test_penalty_is_zero_at_the_anchor() -> None:
    model = make_router()
    penalty = ewc_penalty(model, anchor_of(model), random_fisher(model))
    assert penalty.shape == ()
    assert penalty.item() == 0.0


def test_penalty_is_fisher_weighted_squared_distance() -> None:
    model = make_router()
    anchor, fisher = anchor_of(model), random_fisher(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    expected = sum(
        (fisher[k].double() * (p.detach().double() - anchor[k].double()) ** 2).sum()
        for k, p in model.named_parameters()
    )
    penalty = ewc_penalty(model, anchor, fisher)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    # its gradient is 2 F (theta - theta*)
    penalty.backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * fisher[k] * (p.detach() - anchor[k]), msg=k)


def test_penalty_uses_only_the_parameters_in_the_fisher() -> None:
    model = make_router()
    anchor = anchor_of(model)
    fisher = {"prior": torch.full((CFG.d_model,), 2.0)}
    with torch.no_grad():
        model.prior.add_(0.5)  # counted: 8 entries * 2.0 * 0.25
        model.head.weight.add_(10.0)  # not in the Fisher: ignored
    assert ewc_penalty(model, anchor, fisher).item() == pytest.approx(CFG.d_model * 2.0 * 0.25)


def test_penalty_of_a_grown_router_ignores_the_new_head_row() -> None:
    small = make_router(2)
    anchor = anchor_of(small)
    fisher = fisher_diagonal(small, sample_inputs([4, 7, 2]))
    grown = small.grow(torch.Generator().manual_seed(3))
    # the new row alone moves: no penalty
    with torch.no_grad():
        grown.head.weight[2].add_(5.0)
        grown.head.bias[2].add_(5.0)
    assert ewc_penalty(grown, anchor, fisher).item() == 0.0
    # old rows and other tensors move: penalised exactly on the old entries
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in grown.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    expected = 0.0
    for k, p in grown.named_parameters():
        old = anchor[k]
        delta = p.detach()[: old.shape[0]].double() - old.double()
        expected += (fisher[k].double() * delta**2).sum().item()
    penalty = ewc_penalty(grown, anchor, fisher)
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    assert penalty.item() > 0
    penalty.backward()
    assert torch.equal(grown.head.weight.grad[2], torch.zeros(CFG.hidden))
    assert grown.head.bias.grad[2].item() == 0.0


# --- accumulate ------------------------------------------------------------------------------------


def test_accumulate_same_shapes_is_gamma_prev_plus_new() -> None:
    prev = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    new = {"a": torch.tensor([10.0, 20.0]), "b": torch.tensor([[0.5]])}
    out = accumulate(prev, new, 0.5)
    assert out.keys() == new.keys()
    torch.testing.assert_close(out["a"], torch.tensor([10.5, 21.0]))
    torch.testing.assert_close(out["b"], torch.tensor([[2.0]]))
    # inputs are not modified
    assert torch.equal(prev["a"], torch.tensor([1.0, 2.0])) and torch.equal(new["a"], torch.tensor([10.0, 20.0]))


def test_accumulate_pads_a_smaller_head_with_zero_rows() -> None:
    prev = {"head.weight": torch.ones(2, 3), "head.bias": torch.tensor([1.0, 2.0]), "prior": torch.ones(4)}
    new = {
        "head.weight": torch.full((4, 3), 2.0),
        "head.bias": torch.tensor([1.0, 1.0, 1.0, 1.0]),
        "prior": torch.ones(4),
    }
    out = accumulate(prev, new, 0.25)
    expected_w = torch.full((4, 3), 2.0)
    expected_w[:2] += 0.25
    torch.testing.assert_close(out["head.weight"], expected_w)
    torch.testing.assert_close(out["head.bias"], torch.tensor([1.25, 1.5, 1.0, 1.0]))
    torch.testing.assert_close(out["prior"], torch.full((4,), 1.25))


def test_accumulate_with_no_previous_copies_new() -> None:
    new = {"a": torch.tensor([1.0, 2.0])}
    out = accumulate({}, new, 0.9)
    assert torch.equal(out["a"], new["a"])
    out["a"].add_(1.0)
    assert torch.equal(new["a"], torch.tensor([1.0, 2.0]))  # a copy, not the same tensor


def test_accumulate_real_stages() -> None:
    """Stage 1 (2 experts) then stage 2 (grown to 3): F_2 = gamma * pad(F_1) + F_new."""
    small = make_router(2)
    f1 = fisher_diagonal(small, sample_inputs([3, 5]))
    grown = small.grow(torch.Generator().manual_seed(0))
    f_new = fisher_diagonal(grown, sample_inputs([6, 2], seed=7))
    out = accumulate(f1, f_new, 0.7)
    for name, f in f_new.items():
        assert out[name].shape == f.shape, name
        padded = torch.cat([f1[name], torch.zeros(f.shape[0] - f1[name].shape[0], *f.shape[1:])])
        torch.testing.assert_close(out[name], 0.7 * padded + f, msg=name)
    assert out["head.weight"].shape == (3, CFG.hidden)
    torch.testing.assert_close(out["head.weight"][2], f_new["head.weight"][2])


def test_fisher_of_an_empty_prefix_batched_with_longer_ones() -> None:
    """A sample with no bytes (BOS alone) scores position 0, the learned prior; padding lets it run."""
    router = make_router()
    empty = torch.tensor([BOS])
    fisher = fisher_diagonal(router, [empty, *sample_inputs([5])], chunk=32)
    # the prior's decision is the same with any byte after BOS: score position 0 of BOS + one byte
    reference = brute_force_fisher(router, sample_inputs([5]))
    prior_only = brute_force_position_zero(router)
    for name in fisher:
        torch.testing.assert_close(fisher[name], (reference[name] + prior_only[name]) / 2, rtol=1e-4, atol=1e-7)


def test_fisher_of_an_empty_prefix_alone() -> None:
    router = make_router()
    fisher = fisher_diagonal(router, [torch.tensor([BOS])], chunk=1)
    for name, f in brute_force_position_zero(router).items():
        torch.testing.assert_close(fisher[name], f, rtol=1e-4, atol=1e-7)
