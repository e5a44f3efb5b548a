"""Elastic weight consolidation for the router's stages.

penalty = sum_i F_i (theta_i - theta*_i)^2 over the parameters the previous stage had (a grown head
is compared on its old rows only); the caller multiplies by lambda / 2. The Fisher is the exact
expected Fisher of the router's own predictive distribution, per sample:

    F = mean_n sum_c p(c | x_n) (d log p(c | x_n) / d theta)^2

computed with torch.func (per-sample Jacobians, vmapped), not the batched empirical approximation.
Online EWC accumulates it over stages: F_s = gamma * F_{s-1} + F_new.
"""

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap


def ewc_penalty(model: nn.Module, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, p in model.named_parameters():
        if name in fisher:
            old = anchor[name]
            total = total + (fisher[name] * (p[: old.shape[0]] - old) ** 2).sum()
    return total


@torch.no_grad()
def fisher_diagonal(router: nn.Module, inputs: list[torch.Tensor], chunk: int = 32) -> dict[str, torch.Tensor]:
    """Exact expected Fisher of the routing decision after each sample's whole prefix.

    `inputs` are router inputs (BOS + bytes), one per sample; the decision scored is the one at the
    last position, which has seen every byte of the prefix.
    """
    router = router.eval()
    params = {k: v.detach() for k, v in router.named_parameters()}
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    if not inputs:
        return fisher

    def log_probs(p: dict[str, torch.Tensor], x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        logits = functional_call(router, p, (x[None],))[0]  # (T, n_experts)
        return logits.index_select(0, last[None])[0].log_softmax(-1)  # (n_experts,)

    per_sample = vmap(jacrev(log_probs), in_dims=(None, 0, 0))
    per_sample_probs = vmap(log_probs, in_dims=(None, 0, 0))
    for start in range(0, len(inputs), chunk):
        part = inputs[start : start + chunk]
        width = max(len(x) for x in part)
        x = torch.stack([nn.functional.pad(t, (0, width - len(t))) for t in part])
        last = torch.tensor([len(t) - 1 for t in part])
        with torch.enable_grad():
            jac = per_sample(params, x, last)  # name -> (N, n_experts, *shape)
        probs = per_sample_probs(params, x, last).exp()  # (N, n_experts)
        for name, j in jac.items():
            weights = probs.reshape(*probs.shape, *([1] * (j.dim() - 2)))
            fisher[name] += (weights * j.pow(2)).sum(dim=(0, 1))
    return {k: v / len(inputs) for k, v in fisher.items()}


def accumulate(
    previous: dict[str, torch.Tensor], new: dict[str, torch.Tensor], gamma: float
) -> dict[str, torch.Tensor]:
    """Online EWC: gamma * previous + new, padding a previous head with zero rows for new experts."""
    out = {}
    for name, f in new.items():
        old = previous.get(name)
        if old is None:
            out[name] = f.clone()
            continue
        if old.shape != f.shape:
            old = torch.cat([old, torch.zeros(f.shape[0] - old.shape[0], *f.shape[1:], dtype=f.dtype)])
        out[name] = gamma * old + f
    return out
