"""How the composed model weighs its candidates (the experts, and the base when there is one) for
each byte: the `model.mixing` rule, saved in every version's manifest.

`router` (the first design): w_e(t) = the router's softmax over the experts, all but the top-k zeroed
and the rest renormalised. The base, if any, is not mixed.

`posterior` (BTM's posterior ensembling, with the router as the prior):

    L_c(0) = 0,    L_c(t) = decay * L_c(t-1) + log p_c(x_{t-1} | x_<t-1)     decayed log-likelihood
    log w_c(t) = log prior_c(t) + L_c(t) - log Z(t)                         over the live candidates
    prior_e(t) = (1 - base_prior) * softmax(router logits(x_<t) / prior_temperature)_e,  prior_base = base_prior

A candidate's weight grows with how well it predicted the bytes so far; `decay` < 1 forgets old
evidence, so a text can change domain. Pruning: from byte `prune_after` of a chunk on, when the
candidates outside the `keep` most probable hold less than `threshold` of the weight at t, they are
dropped from t to the end of the chunk (they need not be computed any more, so serving costs about
`keep` experts). Not earlier: after a few bytes one expert can lead by e^5 on the date or place a
record opens with, and pruning then cost 0.23 bits/byte (0.79 against 0.56 on the default model).
The router, trained to name a prefix's source, has already read the bytes the evidence counts: taken
as trained (`prior_temperature` 1) it counts them twice and is over-confident (0.438 bits/byte against
0.427 for a uniform prior, on the `make run` model of 2026-12-04); at 4 it gives 0.427 and still breaks
ties on the first bytes. The weights for byte t use bytes before t only: bits per byte stay true
likelihoods. Every chunk (BOS first) starts afresh.
"""

import math
from dataclasses import asdict

import torch

from moe_unlearn.config import MixingConfig

RULES = ("router", "posterior")
# (decayed log-likelihoods (N, C), live candidates (N, C) bool, position in the chunk)
State = tuple[torch.Tensor, torch.Tensor, int]


def settings(mixing: MixingConfig, top_k: int, has_base: bool) -> dict:
    """The settings a response names: what produced its numbers."""
    if mixing.rule == "router":
        return {"rule": "router", "top_k": top_k}
    out = {k: v for k, v in asdict(mixing).items()}
    if not has_base:
        out.pop("base_prior")
    return out


def saved_settings(manifest: dict) -> dict:
    """The settings a version was built with; versions from before `model.mixing` used the router's top-k,
    posterior versions from before `prior_temperature` the router's prior as trained."""
    saved = manifest.get("mixing") or {"rule": "router", "top_k": manifest.get("top_k", 2)}
    if saved["rule"] == "posterior" and "prior_temperature" not in saved:
        saved = {**saved, "prior_temperature": 1.0}
    return saved


def from_manifest(manifest: dict) -> tuple[MixingConfig, int]:
    """(mixing config, router top-k) a version was built with."""
    saved = dict(saved_settings(manifest))
    top_k = int(saved.pop("top_k", manifest.get("top_k", 2)))
    return MixingConfig(**saved), top_k


def log_prior(router_logits: torch.Tensor, base_prior: float | None, temperature: float = 1.0) -> torch.Tensor:
    """Log prior (..., C) over the candidates from the router's logits (..., n_experts) divided by
    `temperature`: the experts, then the base when `base_prior` is not None."""
    log_p = (router_logits.float() / temperature).log_softmax(-1)
    if base_prior is None:
        return log_p
    base = torch.full_like(log_p[..., :1], math.log(base_prior))
    return torch.cat([log_p + math.log1p(-base_prior), base], dim=-1)


def posterior_log_weights(
    log_lik: torch.Tensor, log_prior: torch.Tensor, mixing: MixingConfig, state: State | None = None
) -> tuple[torch.Tensor, State]:
    """Log weights (N, T, C) used for each position's byte (-inf: pruned) and the state after the last
    position. `log_lik[:, t, c]` is log p_c of the byte at position t (values of pruned candidates are
    never read, so they need not have been computed); `log_prior` (N, T, C); `state` continues a
    sequence (None: a chunk's start)."""
    N, T, C = log_lik.shape
    if state is None:
        evidence, live, start = torch.zeros(N, C, dtype=torch.float32), torch.ones(N, C, dtype=torch.bool), 0
    else:
        evidence, live, start = state[0].clone(), state[1].clone(), state[2]
    out = torch.empty(N, T, C)
    for t in range(T):
        out[:, t], live = step_log_weights(log_prior[:, t], evidence, live, start + t >= mixing.prune_after, mixing)
        evidence = add_evidence(evidence, live, log_lik[:, t], mixing)
    return out, (evidence, live, start + T)


def step_log_weights(
    log_prior: torch.Tensor, evidence: torch.Tensor, live: torch.Tensor, may_prune, mixing: MixingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the posterior rule: (log weights (N, C), live candidates after pruning there) from
    its log prior (N, C), the evidence so far and the live candidates before it. `may_prune`: a bool, or
    one per row (N,) (rows of a batch can be at different positions of their chunks)."""
    C = log_prior.shape[-1]
    keep = min(mixing.keep, C)
    log_w = (log_prior.float() + evidence).masked_fill(~live, -math.inf).log_softmax(-1)
    per_row = isinstance(may_prune, torch.Tensor)
    if keep < C and (bool(may_prune.any()) if per_row else may_prune) and int(live.sum(-1).max()) > keep:
        log_threshold = math.log(mixing.threshold) if mixing.threshold > 0 else -math.inf
        outside = live.clone().scatter_(1, log_w.topk(keep, dim=-1).indices, False)
        mass = log_w.masked_fill(~outside, -math.inf).logsumexp(-1)  # log of the weight outside the top k
        prune = outside & ((mass < log_threshold) & may_prune if per_row else mass < log_threshold)[:, None]
        if prune.any():
            live = live & ~prune
            log_w = log_w.masked_fill(~live, -math.inf).log_softmax(-1)
    return log_w, live


def add_evidence(evidence: torch.Tensor, live: torch.Tensor, log_lik: torch.Tensor, mixing: MixingConfig):
    """The decayed log-likelihoods (N, C) after one more byte, whose log p under each candidate is
    `log_lik` (N, C); pruned candidates keep theirs (their values are never read)."""
    return torch.where(live, mixing.decay * evidence + log_lik.float(), evidence)


def mix(log_weights: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """log sum_c w_c p_c: log_weights (..., C), log_probs (..., C) or (..., C, V) with the candidate
    axis where the weights have it. Pruned candidates (-inf weight) contribute nothing, whatever
    their (possibly never computed) values."""
    axis = log_weights.dim() - 1
    if log_probs.dim() == log_weights.dim() + 1:
        log_weights = log_weights[..., None]
    live = log_weights > -math.inf
    return torch.where(live, log_weights + log_probs, -math.inf).logsumexp(dim=axis)
