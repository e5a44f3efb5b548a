"""The audit's measures, as pure functions of numbers (losses, log-probabilities, likelihoods).

Convention: a membership score is higher for records that look trained on. Each function is tested
on inputs with known answers (tests/audit/test_metrics.py).
"""

import math
import zlib
from collections.abc import Sequence

import torch


def loss_score(bits_per_byte: float) -> float:
    """Loss attack: a low loss suggests a member."""
    return -bits_per_byte


def zlib_score(total_bits: float, text: bytes) -> float:
    """zlib-ratio attack: the model's loss relative to zlib's (both in bits), so that text that is
    simply easy to compress does not look like a member."""
    return -total_bits / (8 * len(zlib.compress(text, 9)))


def min_k_score(byte_log_probs: torch.Tensor, k: float = 0.2) -> float:
    """Min-K% attack: mean of the k fraction lowest per-byte log-probabilities (a member has few
    surprising bytes)."""
    n = max(1, math.ceil(k * byte_log_probs.numel()))
    return byte_log_probs.flatten().double().sort().values[:n].mean().item()


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> tuple[float, float]:
    """AUROC of telling members (label 1) from non-members by score, and its standard error
    (Hanley & McNeil, 1982)."""
    if not members or not nonmembers:
        raise ValueError("AUC needs at least one member and one non-member")
    scores = torch.tensor([*members, *nonmembers], dtype=torch.float64)
    labels = torch.tensor([1] * len(members) + [0] * len(nonmembers))
    from torchmetrics.functional.classification import binary_auroc  # ~1 s to import; only the audit needs it

    a = binary_auroc(scores, labels).item()
    n1, n0 = len(members), len(nonmembers)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(0.0, (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)))
    return a, se


def privleak(auc_model: float, auc_oracle: float) -> float | None:
    """(AUC_model - AUC_oracle) / AUC_oracle * 100 (MUSE); 0 means no more leakage than the oracle.
    None when the oracle's AUC is 0 (the forget set always scores below the held-out set: undefined)."""
    if auc_oracle == 0:
        return None
    return (auc_model - auc_oracle) / auc_oracle * 100


def exposure(canary_log_prob: float, candidate_log_probs: Sequence[float]) -> float:
    """log2 |R| - log2 rank, with the rank estimated on a uniform sample of n candidate secrets:
    log2(n + 1) - log2(rank among the n + 1), rank 1 the most likely. Ties count against the canary."""
    higher_or_equal = sum(1 for lp in candidate_log_probs if lp >= canary_log_prob)
    return math.log2(len(candidate_log_probs) + 1) - math.log2(1 + higher_or_equal)


def extrapolated_exposure(canary_log_prob: float, candidate_log_probs: Sequence[float]) -> float:
    """Carlini et al.'s extrapolation: fit a normal to the candidates' log-probabilities and return
    -log2 P(a random secret is at least as likely as the canary); not capped by the sample size."""
    x = torch.tensor(candidate_log_probs, dtype=torch.float64)
    z = (canary_log_prob - x.mean().item()) / max(x.std().item(), 1e-12)
    tail = 0.5 * math.erfc(z / math.sqrt(2))
    if tail > 0:
        return -math.log2(tail)
    # erfc underflows beyond z ~ 38: its asymptotic log, -z^2/2 - log(z sqrt(2 pi)), in bits.
    return (z * z / 2 + math.log(z * math.sqrt(2 * math.pi))) / math.log(2)


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of whether `a` and `b` come from the same distribution:
    (U of `a`, p-value), normal approximation with tie correction (fine from ~20 a side)."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("the test needs samples on both sides")
    values = torch.tensor([*a, *b], dtype=torch.float64)
    _, inverse, counts = values.unique(return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts - 1) / 2)[inverse]  # 1-based ranks, averaged over ties
    ties = (counts.double() ** 3 - counts).sum().item()
    u = ranks[:n1].sum().item() - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)  # continuity correction
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))
