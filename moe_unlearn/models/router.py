"""The router: a causal classifier from the bytes seen so far to a distribution over experts.

Causality is the point: the weights used for byte t depend only on bytes before t, so the mixture's
bits per byte (and membership scores) are true likelihoods. Design, per position t:

    u_s  = GELU(causal conv over the embeddings of bytes s-kernel+1..s)      n-gram features
    m_t  = (prior + sum_{s<t} u_s) / (t + 1)                                 running mean, t = 0: learned prior
    logits_t = head(MLP(m_t))                                                one head row per expert

The running mean makes the router length-agnostic (it trains on short prefixes and serves long ones)
and cheap (linear in the length). Training in stages adds one head row per expert (`grow`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from moe_unlearn.config import RouterModelConfig
from moe_unlearn.data.examples import VOCAB

_PAD = VOCAB + 1  # the symbol before the first input (BOS is VOCAB, inputs use 0..VOCAB)


class Router(nn.Module):
    """Maps byte inputs (B, T) (BOS first) to expert logits (B, T) x n_experts, causally."""

    def __init__(self, cfg: RouterModelConfig, n_experts: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB + 1, cfg.d_model)
        self.conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.kernel)
        self.prior = nn.Parameter(torch.zeros(cfg.d_model))
        self.mlp = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.hidden), nn.GELU())
        self.head = nn.Linear(cfg.hidden, n_experts)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv1d)):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def n_experts(self) -> int:
        return self.head.out_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """`inputs[:, t]` is BOS for t = 0 and byte t-1 after: logits at t see bytes < t only."""
        return self.classify(self.features(inputs))  # (B, T, n_experts)

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The running means m_t, (B, T, C), that the decision at each position is made from."""
        prior = self.prior.expand(inputs.shape[0], 1, -1)
        if inputs.shape[1] == 1:  # BOS alone: only the learned prior
            return prior
        u = F.gelu(self._causal_conv(inputs[:, 1:]))  # (B, T-1, C): u_s from the bytes x_0..x_{T-2}
        sums = torch.cat([prior, u], dim=1).cumsum(dim=1)  # (B, T, C): prior + sum of u_s for s < t
        counts = torch.arange(1, inputs.shape[1] + 1, device=inputs.device, dtype=sums.dtype)
        return sums / counts[None, :, None]

    def continuation_features(self, head: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """`features(cat([head] * N, tails))` at the last tails.shape[1] + 1 positions (the ones that
        predict a continuation's bytes), computed from the shared head once: head (1, P + 1) is BOS and a
        P-byte prefix, tails (N, n - 1) the continuations' bytes that are inputs. Returns (N, n, C)."""
        k, p = self.cfg.kernel, head.shape[1] - 1
        shared = self.features(head)[:, -1] * (p + 1)  # prior + the prefix's u_s: (1, C)
        if tails.shape[1] == 0:
            return (shared / (p + 1)).expand(tails.shape[0], 1, -1)
        context = head[:, 1:][:, max(0, p - (k - 1)) :].expand(tails.shape[0], -1)  # the windows' prefix bytes
        u = F.gelu(self._causal_conv(torch.cat([context, tails], dim=1)))[:, context.shape[1] :]  # (N, n-1, C)
        sums = torch.cat([shared.expand(tails.shape[0], 1, -1), shared + u.cumsum(dim=1)], dim=1)
        counts = torch.arange(p + 1, p + 1 + sums.shape[1], dtype=sums.dtype, device=sums.device)
        return sums / counts[None, :, None]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Expert logits from running means, any leading shape."""
        return self.head(self.mlp(features))

    def _causal_conv(self, data: torch.Tensor) -> torch.Tensor:
        """`conv` over `embed(data)`, zero-padded on the left, computed as table lookups: both are
        linear, so tap j of the kernel is the table embed.weight @ conv.weight[:, :, j].T indexed by
        the byte. Same parameters and maths as Conv1d, without its (slow on CPU) backward."""
        padded = F.pad(data, (self.cfg.kernel - 1, 0), value=_PAD)  # (B, k-1+T)
        return self.conv_windows(padded.unfold(1, self.cfg.kernel, 1), self.conv_tables())  # (B, T, C)

    def conv_tables(self) -> torch.Tensor:
        """The convolution as one lookup table per tap (k, V+2, C); its last row (_PAD) is all zero."""
        tables = torch.einsum("vc,ocj->jvo", self.embed.weight, self.conv.weight)  # (k, V+1, C)
        return F.pad(tables, (0, 0, 0, 1))

    def conv_windows(self, windows: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """The convolution (..., C) at windows (..., k) of bytes, _PAD before the first: tap j reads
        window[j], the byte k-1-j before the output's position."""
        offsets = torch.arange(self.cfg.kernel, device=windows.device) * tables.shape[1]
        return F.embedding(windows + offsets, tables.flatten(0, 1)).sum(dim=-2) + self.conv.bias

    def grow(self, generator: torch.Generator) -> "Router":
        """A copy with one more head row (a new expert), the new row drawn from `generator`."""
        bigger = Router(self.cfg, self.n_experts + 1)
        bigger.load_state_dict(_grown_state(self, generator))
        return bigger


NGRAM_BUCKETS = 256  # hashed byte bigrams and trigrams a FeatureRouter reads beside the base's features
_MULTIPLIER, _MODULUS, _MIX = 1_000_003, 998_244_353, 2_654_435_761  # int64-safe: products stay < 2^63


def byte_ngrams(inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Signed hashed indicators of the byte bigram and trigram ending at each input (B, T, NGRAM_BUCKETS):
    the n-gram of position s is inputs[s-n+1..s], so a running mean of them at t has seen bytes < t.
    `context` (B, c): the inputs before `inputs` (a continuation's prefix; its last two are used).
    Integer hashing, so the features are the same on every machine."""
    before = torch.full((inputs.shape[0], 2), _PAD, dtype=torch.long, device=inputs.device)
    if context is not None:
        before = torch.cat([before, context.long()], dim=1)[:, -2:]
    data, length = torch.cat([before, inputs.long()], dim=1), inputs.shape[1]
    out = torch.zeros(*inputs.shape, NGRAM_BUCKETS, device=inputs.device)
    for n, salt in _NGRAMS:
        bucket, sign = _bucket(_hash(salt, [data[:, j : j + length] for j in range(3 - n, 3)]))
        out.scatter_add_(2, bucket[..., None], sign.float()[..., None])
    return out


def ngram_buckets(windows: list[list[int]]) -> torch.Tensor:
    """Where `byte_ngrams` puts its signs at one position per row: (3, hits) rows, buckets and signs,
    from each row's last three inputs (the two before it, _PAD before the first, then its own). The same
    hashes in Python integers, for decoding one byte at a time."""
    hits = []
    for row, window in enumerate(windows):
        for n, salt in _NGRAMS:
            hits.append((row, *_bucket(_hash(salt, window[3 - n :]))))
    return torch.tensor(hits).T


_NGRAMS = ((2, 17), (3, 91))  # (n, salt)


def _hash(salt: int, parts: list):
    """Polynomial hash of the inputs `parts` (ints, or int64 tensors of one shape), oldest first."""
    h = salt
    for x in parts:
        h = (h * _MULTIPLIER + x + 1) % _MODULUS
    return h


def _bucket(h):
    """(bucket, sign) of a hash: signed, so that colliding n-grams tend to cancel, not add up."""
    h = h * _MIX % 2**31
    return h % NGRAM_BUCKETS, ((h >> 20) & 1) * 2 - 1


def feature_size(d_model: int) -> int:
    """Width of the features a FeatureRouter reads (ByteTransformer.router_features): the base's byte
    embeddings and hidden states, and the hashed byte n-grams."""
    return 2 * d_model + NGRAM_BUCKETS


class FeatureRouter(nn.Module):
    """The router as a head on the frozen base model's features (used when a version has a base):

        f_t = mean_{s <= t} [e_s, h_s, g_s]   e_s: the embedding of input s (BOS, then byte s-1), h_s: the
                                              base's final hidden state (position s has seen bytes < s),
                                              g_s: the hashed bigram and trigram ending at input s
        logits_t = head(MLP(f_t))

    The base is not part of it (nor of its file): a stage trains only this head, on features computed
    once per record (training/features.py), so a stage costs a small fraction of an expert."""

    def __init__(self, cfg: RouterModelConfig, d_in: int, n_experts: int):
        super().__init__()
        self.cfg = cfg
        self.mlp = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, cfg.hidden), nn.GELU())
        self.head = nn.Linear(cfg.hidden, n_experts)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def n_experts(self) -> int:
        return self.head.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Expert logits from running-mean base features (..., d_in)."""
        return self.classify(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(features))

    def grow(self, generator: torch.Generator) -> "FeatureRouter":
        """A copy with one more head row (a new expert), the new row drawn from `generator`."""
        bigger = FeatureRouter(self.cfg, self.mlp[0].normalized_shape[0], self.n_experts + 1)
        bigger.load_state_dict(_grown_state(self, generator))
        return bigger


def running_mean(hidden: torch.Tensor, start: torch.Tensor | None = None, count: int = 0) -> torch.Tensor:
    """mean_{s <= t} hidden_s along dim 1 (B, T, C); `start` (B, C) sums `count` earlier positions."""
    sums = hidden.float().cumsum(dim=1)
    if start is not None:
        sums = sums + start[:, None]
    counts = torch.arange(count + 1, count + 1 + hidden.shape[1], dtype=sums.dtype, device=sums.device)
    return sums / counts[None, :, None]


def _grown_state(router: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in router.state_dict().items()}
    new_row = torch.randn(1, router.cfg.hidden, generator=generator) * 0.02
    state["head.weight"] = torch.cat([state["head.weight"], new_row])
    state["head.bias"] = torch.cat([state["head.bias"], torch.zeros(1)])
    return state


def expert_weights(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Softmax weights with all but the top-k experts zeroed and the rest renormalised to sum to 1."""
    probs = logits.float().softmax(dim=-1)
    k = min(top_k, probs.shape[-1])
    top = probs.topk(k, dim=-1)
    kept = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
    return kept / kept.sum(dim=-1, keepdim=True)
