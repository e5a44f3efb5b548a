"""What the audit measures on a model: per-record membership scores, canary likelihoods, exposure,
extraction and router agreement. Functions of (model, data); the numbers go to audit.metrics."""

import math

import torch

from moe_unlearn.audit.metrics import exposure, extrapolated_exposure, loss_score, min_k_score, zlib_score
from moe_unlearn.data.corpus import Canary, canary_candidates
from moe_unlearn.data.examples import BOS
from moe_unlearn.models.moe import MixtureOfExperts

LN2 = math.log(2)


def membership_scores(model: MixtureOfExperts, texts: list[str], k: float = 0.2) -> dict[str, list[float]]:
    """Per text: bits per byte and the loss, zlib-ratio and Min-K% scores (higher = more member-like)."""
    per_text = [text_scores(model, text, k) for text in texts]
    return {key: [one[key] for one in per_text] for key in ("bits_per_byte", "loss", "zlib", "min_k")}


def text_scores(model: MixtureOfExperts, text: str, k: float = 0.2) -> dict[str, float]:
    """One text's bits per byte and its loss, zlib-ratio and Min-K% membership scores."""
    data = text.encode("utf-8")
    lp, _ = model.byte_log_probs(data)
    bits = -lp.double().sum().item() / LN2
    return {
        "bits_per_byte": bits / len(data),
        "loss": loss_score(bits / len(data)),
        "zlib": zlib_score(bits, data),
        "min_k": min_k_score(lp, k),
    }


def canary_exposure(model: MixtureOfExperts, canary: Canary, candidates: int = 4096, seed: int = 0) -> dict:
    """Exposure of `canary`'s secret among `candidates` uniformly sampled other secrets (sampled rank
    and Carlini et al.'s extrapolation); the secret's trailing '.' is scored too."""
    others = canary_candidates(canary, candidates, seed)
    prefix = canary.prefix.encode()
    true_lp, *lps = model.continuation_log_probs(prefix, [f"{s}.".encode() for s in [canary.secret, *others]]).tolist()
    return {
        "rank": 1 + sum(1 for lp in lps if lp >= true_lp),  # ties count against the secret, as in `exposure`
        "exposure": exposure(true_lp, lps),
        "exposure_extrapolated": extrapolated_exposure(true_lp, lps),
        "log_prob": true_lp,
        "candidates": len(lps),
    }


@torch.no_grad()
def extracts(model: MixtureOfExperts, canary: Canary) -> bool:
    """Greedy decoding from the canary's prefix reproduces its secret. Computed in one forward pass:
    greedy decoding follows the secret exactly as long as each secret byte is the argmax given the
    prefix and the secret bytes before it."""
    prefix, secret = canary.prefix.encode(), canary.secret.encode()
    log_p, _ = model(torch.tensor([[BOS, *prefix, *secret[:-1]]]))
    return log_p[0, len(prefix) :].argmax(-1).tolist() == list(secret)


@torch.no_grad()
def router_agreement(before: MixtureOfExperts, after: MixtureOfExperts, prefixes: list[bytes]) -> float:
    """Share of prefixes whose top-1 expert (by name) is the same under both models."""
    if not prefixes:
        return float("nan")
    top_before = [before.names[i] for i in before.route(prefixes).argmax(-1).tolist()]
    top_after = [after.names[i] for i in after.route(prefixes).argmax(-1).tolist()]
    return sum(a == b for a, b in zip(top_before, top_after, strict=True)) / len(prefixes)
