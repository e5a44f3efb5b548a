"""The composed model: p(x_t | x_<t) = sum over candidates c of w_c(t) * p_c(x_t | x_<t).

The candidates are the experts and, when the version has one, the base model; the weights w_c(t)
come from the mixing rule (models/mixing.py: the router's top-k, or the posterior with the router as
prior) and depend on bytes before t only. Likelihoods are defined chunk by chunk (each chunk of
`block_size` bytes starts from BOS), exactly as the experts were trained, so `score` gives true bits
per byte. `generate` samples with its own seeded generator (batching-independent); `sample` yields the
same bytes one at a time (streaming), one cached step per byte (models/decoding.py). `score_batch` scores
many texts in one padded forward.
"""

import math
from collections.abc import Iterator

import torch
from torch import nn

from moe_unlearn.config import MixingConfig
from moe_unlearn.data.examples import BOS, IGNORE, chunks, lm_example, pad_collate
from moe_unlearn.models import mixing as rules
from moe_unlearn.models.decoding import Decoder, draw
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import FeatureRouter, Router, expert_weights, running_mean

BASE = "base"  # the base model's name among the candidates


class MixtureOfExperts(nn.Module):
    def __init__(
        self,
        *,
        experts: dict[str, ByteTransformer],
        router: Router | FeatureRouter,
        top_k: int,
        mixing: MixingConfig | None = None,
        base: ByteTransformer | None = None,
    ):
        super().__init__()
        if router.n_experts != len(experts):
            raise ValueError(f"router has {router.n_experts} outputs for {len(experts)} experts")
        self.mixing = mixing or MixingConfig(rule="router")
        self.posterior = self.mixing.rule == "posterior"
        self.names = list(experts) + ([BASE] if base is not None and self.posterior else [])
        self.experts = nn.ModuleList(experts.values())
        self.base = base
        self.router, self.top_k = router, top_k
        self.block_size = min(e.cfg.block_size for e in self.experts)

    @property
    def candidates(self) -> list[ByteTransformer]:
        """The models mixed, in the order of `names`."""
        return list(self.experts) + ([self.base] if len(self.names) > len(self.experts) else [])

    @property
    def settings(self) -> dict:
        """The mixing settings, for every answer to name the rule that produced it."""
        return rules.settings(self.mixing, self.top_k, has_base=self.base is not None)

    def router_logits(self, inputs: torch.Tensor, base_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """The router's expert logits (B, T, n_experts) for BOS-first inputs: from the bytes, or (a
        FeatureRouter) from the base's features (its hidden states `base_hidden` when the caller has them)."""
        if isinstance(self.router, FeatureRouter):
            return self.router(running_mean(self.base.router_features(inputs, base_hidden)))
        return self.router(inputs)

    def _candidate_log_probs(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Every candidate's next-byte log-probabilities (B, T, 256), and the base's hidden states if it ran."""
        out, base_hidden = [], None
        for model in self.candidates:
            hidden = model.hidden(inputs)
            if model is self.base:
                base_hidden = hidden
            out.append(model.logits(hidden).float().log_softmax(-1))
        return out, base_hidden

    def _log_prior(self, router_logits: torch.Tensor) -> torch.Tensor:
        has_base = len(self.names) > len(self.experts)
        return rules.log_prior(
            router_logits, self.mixing.base_prior if has_base else None, self.mixing.prior_temperature
        )

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p of the next byte (B, T, 256), candidate weights (B, T, len(names))) for BOS-first inputs."""
        if self.posterior:
            per_candidate, base_hidden = self._candidate_log_probs(inputs)
            log_p = torch.stack(per_candidate, dim=2)  # (B, T, C, 256)
            targets = torch.cat([inputs[:, 1:], torch.zeros_like(inputs[:, :1])], dim=1)  # the byte after each input
            log_lik = log_p.gather(-1, targets[:, :, None, None].expand(-1, -1, log_p.shape[2], 1))[..., 0]
            prior = self._log_prior(self.router_logits(inputs, base_hidden))
            log_w, _ = rules.posterior_log_weights(log_lik, prior, self.mixing)
            return rules.mix(log_w, log_p), log_w.exp()
        weights = expert_weights(self.router_logits(inputs), self.top_k)  # (B, T, K)
        # Only experts the router picked somewhere in the batch run; the others would add exp(-inf) = 0.
        used = (weights.flatten(0, 1) > 0).any(0).nonzero()[:, 0].tolist()
        log_p = torch.stack([self.experts[i](inputs).float().log_softmax(-1) for i in used], dim=2)  # (B, T, k, 256)
        return torch.logsumexp(log_p + weights[..., used].log()[..., None], dim=2), weights

    @torch.no_grad()
    def byte_log_probs(self, data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """(natural log p of every byte of `data` (N,), expert weights used for it (N, n_experts)),
        chunk by chunk as in training (BOS starts every chunk)."""
        log_probs, weights = [torch.zeros(0)], [torch.zeros(0, len(self.names))]
        for chunk in chunks(data, self.block_size):
            inputs, targets = lm_example(chunk)
            log_p, w = self(inputs[None])
            log_probs.append(log_p[0].gather(-1, targets[:, None])[:, 0])
            weights.append(w[0])
        return torch.cat(log_probs), torch.cat(weights)

    def score(self, data: bytes) -> dict:
        """Bits per byte of `data` and the router's mean weight per expert over its bytes."""
        log_probs, weights = self.byte_log_probs(data)
        return self._score_summary(-log_probs.double().sum().item(), weights.sum(0), len(data))

    @torch.no_grad()
    def score_batch(self, texts: list[bytes], max_rows: int = 64) -> list[dict]:
        """`score` of each of `texts`, computed together: their chunks, sorted by length, are right-padded into
        batches of `max_rows` and each batch takes one pass, in which every expert runs on the chunks that
        use it only (a chunk scored alone runs its own experts, not the union of the batch's). Padding
        follows every real byte, so (causal attention, causal router) it changes nothing before it: results
        equal `score` up to float rounding."""
        owners, examples = [], []
        for i, data in enumerate(texts):
            for chunk in chunks(data, self.block_size):
                owners.append(i)
                examples.append(lm_example(chunk))
        order = sorted(range(len(examples)), key=lambda j: len(examples[j][1]))  # less padding per batch
        nll = torch.zeros(len(texts), dtype=torch.float64)  # nats per text
        weight_sums = torch.zeros(len(texts), len(self.names))
        for start in range(0, len(order), max_rows):
            part = order[start : start + max_rows]
            inputs, targets = pad_collate([examples[j] for j in part])  # (N, T) each
            real = targets != IGNORE
            mixed, weights = (self._posterior_targets if self.posterior else self._routed_targets)(inputs, targets)
            weights = weights * real[..., None]  # 0 on padding
            owner = torch.tensor([owners[j] for j in part])
            nll.index_add_(0, owner, -torch.where(real, mixed, 0.0).double().sum(1))
            weight_sums.index_add_(0, owner, weights.sum(1))
        return [self._score_summary(nll[i].item(), weight_sums[i], len(data)) for i, data in enumerate(texts)]

    def _routed_targets(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router rule: (log p of each target byte under the mixture (N, T), weights (N, T, K)); every expert
        runs on the rows that use it only."""
        weights = expert_weights(self.router_logits(inputs), self.top_k)  # (N, T, K)
        weights = weights * (targets != IGNORE)[..., None]
        mixed = torch.full(targets.shape, -math.inf)
        for e, expert in enumerate(self.experts):
            rows = (weights[..., e] > 0).any(1).nonzero()[:, 0]
            if len(rows):
                log_p = expert(inputs[rows]).float().log_softmax(-1)  # (n, T, 256)
                picked = log_p.gather(-1, targets[rows].clamp(min=0)[..., None])[..., 0]  # (n, T)
                mixed[rows] = torch.logaddexp(mixed[rows], picked + weights[rows, :, e].log())
        return mixed, weights

    def _posterior_targets(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior rule: (log p of each target byte under the mixture (N, T), weights (N, T, C)). With
        pruning, every candidate runs on the chunk's first `prune_after` bytes, and on the whole chunk only
        in the rows where it is still live at byte `prune_after` (a dropped candidate stays dropped to the
        chunk's end): serving costs about `keep` candidates a byte, not all of them (K = 16: 17)."""
        m, P = self.mixing, self.mixing.prune_after
        safe = targets.clamp(min=0)[..., None]
        if m.threshold <= 0 or m.keep >= len(self.candidates) or inputs.shape[1] <= P + 1:
            per_candidate, base_hidden = self._candidate_log_probs(inputs)
            log_lik = torch.stack([lp.gather(-1, safe)[..., 0] for lp in per_candidate], dim=-1)  # (N, T, C)
            prior = self._log_prior(self.router_logits(inputs, base_hidden))
            log_w, _ = rules.posterior_log_weights(log_lik, prior, m)
            return rules.mix(log_w, log_lik), log_w.exp()
        base_hidden = self.base.hidden(inputs) if isinstance(self.router, FeatureRouter) else None
        prior = self._log_prior(self.router_logits(inputs, base_hidden))  # (N, T, C)

        def target_log_p(model: ByteTransformer, rows: torch.Tensor | slice, positions: slice) -> torch.Tensor:
            if model is self.base and base_hidden is not None:  # already run in full, for the router
                hidden = base_hidden[rows, positions]
            else:
                hidden = model.hidden(inputs[rows, : positions.stop])[:, positions]
            return model.logits(hidden).float().log_softmax(-1).gather(-1, safe[rows, positions])[..., 0]

        head, rest = slice(0, P), slice(P, inputs.shape[1])
        log_lik = torch.zeros(*targets.shape, len(self.candidates))  # values of dropped candidates: never read
        for c, model in enumerate(self.candidates):
            log_lik[:, head, c] = target_log_p(model, slice(None), head)
        _, (evidence, live, _) = rules.posterior_log_weights(log_lik[:, head], prior[:, head], m)
        _, live = rules.step_log_weights(prior[:, P], evidence, live, True, m)  # who is left from byte P on
        for c, model in enumerate(self.candidates):
            rows = live[:, c].nonzero()[:, 0]
            if len(rows):
                log_lik[rows, rest, c] = target_log_p(model, rows, rest)
        log_w, _ = rules.posterior_log_weights(log_lik, prior, m)  # the same pruning, now on every byte
        return rules.mix(log_w, log_lik), log_w.exp()

    def _score_summary(self, nats: float, weight_sum: torch.Tensor, n: int) -> dict:
        return {
            "bits_per_byte": nats / math.log(2) / n if n else float("nan"),
            "bytes": n,
            "expert_weights": dict(zip(self.names, (weight_sum / max(n, 1)).tolist(), strict=True)),
            "mixing": self.settings,
        }

    @torch.no_grad()
    def continuation_log_probs(self, prefix: bytes, continuations: list[bytes], batch_size: int = 4097) -> torch.Tensor:
        """log p(continuation | prefix) in nats (N,), float64, for continuations of one length, all in
        the first chunk. Each expert reads the prefix once (`prefill`) and then only the continuations'
        bytes (`extend`): scoring thousands of canary candidates costs little more than their own bytes."""
        n = len(continuations[0]) if continuations else 0
        if any(len(c) != n for c in continuations):
            raise ValueError("continuations must have equal lengths")
        if not continuations or n == 0:
            return torch.zeros(len(continuations), dtype=torch.float64)
        if len(prefix) + n > self.block_size:
            raise ValueError(f"prefix and continuation exceed the model's {self.block_size}-byte context")
        head = torch.tensor([[BOS, *prefix]])  # position len(prefix) predicts the continuation's first byte
        prefilled = []
        for model in self.candidates:
            hidden, cache = model.prefill(head)
            prefilled.append((model.logits(hidden[0]).float().log_softmax(-1), cache))  # (P + 1, 256)
        base_cache = self.base.prefill(head) if isinstance(self.router, FeatureRouter) else None
        head_logits = self.router_logits(head, base_cache[0] if base_cache else None)  # (1, P + 1, K)
        state = None
        if self.posterior:  # the evidence of the prefix's own bytes, shared by every continuation
            prefix_lik = torch.stack([lp[:-1].gather(-1, head[0, 1:, None])[:, 0] for lp, _ in prefilled], -1)
            _, state = rules.posterior_log_weights(prefix_lik[None], self._log_prior(head_logits[:, :-1]), self.mixing)
        everything = torch.frombuffer(bytearray(b"".join(continuations)), dtype=torch.uint8).long().view(-1, n)
        out = []
        for start in range(0, len(continuations), batch_size):
            targets = everything[start : start + batch_size]  # (N, n)
            tails = targets[:, :-1]  # the continuation bytes that are inputs (predicting the next one)
            logits = self._continuation_router_logits(head, tails, head_logits, base_cache)  # (N, n, K)
            if self.posterior:
                log_lik = self._continuation_lik(prefilled, range(len(prefilled)), targets, tails)
                shared = (state[0].expand(len(targets), -1), state[1].expand(len(targets), -1), state[2])
                log_w, _ = rules.posterior_log_weights(log_lik, self._log_prior(logits), self.mixing, shared)
                mixed = rules.mix(log_w, log_lik)
            else:
                weights = expert_weights(logits, self.top_k)  # (N, n, K)
                used = (weights.flatten(0, 1) > 0).any(0).nonzero()[:, 0].tolist()
                log_lik = self._continuation_lik(prefilled, used, targets, tails)  # only the targets are mixed
                mixed = torch.logsumexp(log_lik + weights[..., used].log(), dim=-1)  # (N, n)
            out.append(mixed.double().sum(-1))
        return torch.cat(out)

    def _continuation_router_logits(self, head, tails, head_logits, base_cache) -> torch.Tensor:
        """Router logits at the positions that predict each continuation's bytes (N, n, K)."""
        if base_cache is None:
            return self.router.classify(self.router.continuation_features(head, tails))
        hidden, cache = base_cache  # (1, P + 1, C)
        n = len(tails)
        if tails.shape[1] == 0:
            return head_logits[:, -1:].expand(n, -1, -1)
        sums = self.base.router_features(head, hidden)[0].float().sum(0).expand(n, -1)  # positions 0..P
        context = head[:, -2:].expand(n, -1)  # the n-grams of the tails' first bytes reach into the prefix
        tail = self.base.router_features(tails, self.base.extend(cache, tails), context)
        tail_features = running_mean(tail, sums, hidden.shape[1])  # (N, n - 1, feature_size)
        return torch.cat([head_logits[:, -1:].expand(n, -1, -1), self.router(tail_features)], dim=1)

    def _continuation_lik(self, prefilled: list, used, targets: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """log p_c(target byte) (N, n, len(used)) of each continuation under each used candidate."""
        per_candidate = []
        for i in used:
            first, cache = prefilled[i]
            lp = first[-1].expand(len(targets), -1)[:, None]  # (N, 1, 256)
            if tails.shape[1]:
                model = self.candidates[i]
                lp = torch.cat([lp, model.logits(model.extend(cache, tails)).float().log_softmax(-1)], dim=1)
            per_candidate.append(lp.gather(-1, targets[..., None])[..., 0])
        return torch.stack(per_candidate, dim=-1)

    @torch.no_grad()
    def route(self, prefixes: list[bytes]) -> torch.Tensor:
        """Router probabilities (N, n_experts) after each whole prefix (the weights for its next byte)."""
        out = []
        for data in prefixes:
            data = data[-(self.block_size - 1) :] if len(data) >= self.block_size else data
            inputs = torch.tensor([[BOS, *data]])
            out.append(self.router_logits(inputs)[0, -1].float().softmax(-1))
        return torch.stack(out)

    def generate(
        self, prompt: bytes, max_new_bytes: int, temperature: float = 1.0, top_k: int = 0, seed: int = 0
    ) -> tuple[bytes, dict[str, float]]:
        """Sample bytes after `prompt` (temperature 0: greedy). Returns the new bytes and the mean
        weight per candidate over the generated positions. The window rule is `score`'s: the text
        (prompt and new bytes) is cut into block_size-byte chunks from its first byte, each starting
        from BOS, so a byte sees the bytes since the last multiple of block_size (models/decoding.py)."""
        new, weight_sum = bytearray(), torch.zeros(len(self.names))
        for byte, weights in self.sample(prompt, max_new_bytes, temperature, top_k, seed):
            new.append(byte)
            weight_sum += weights
        n = max(1, max_new_bytes)
        return bytes(new), {k: v / n for k, v in zip(self.names, weight_sum.tolist(), strict=True)}

    @torch.no_grad()
    def sample(
        self,
        prompt: bytes,
        max_new_bytes: int,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        cached: bool = True,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """The bytes `generate` returns, one at a time as they are drawn, each with the candidate weights
        (len(names),) that produced it. One seeded generator per call: the bytes depend on the seed only.
        Cached (models/decoding.py): one step per active candidate a byte; `cached=False` re-runs the
        whole chunk for every byte (the reference, same window rule and distributions up to rounding)."""
        generator = torch.Generator().manual_seed(seed)
        data = bytearray(prompt)
        decoder = Decoder(self) if cached and max_new_bytes > 0 else None
        if decoder is not None:
            log_p, w = decoder.start(0, prompt)
        for i in range(max_new_bytes):
            if decoder is None:
                tail = data[len(data) - len(data) % self.block_size :]  # the chunk of the next byte
                log_p, weights = self(torch.tensor([[BOS, *tail]]))
                log_p, w = log_p[0, -1], weights[0, -1]
            nxt = draw(log_p, temperature, top_k, generator)
            data.append(nxt)
            yield nxt, w
            if decoder is not None and i + 1 < max_new_bytes:
                log_p, w = (t[0] for t in decoder.advance([0], [nxt]))
