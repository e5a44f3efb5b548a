"""A byte-level causal transformer: one expert of the mixture.

Plain PyTorch in the style of nanoGPT: pre-norm blocks, `scaled_dot_product_attention`, tied
input/output embeddings. Inputs are bytes 0..255 plus BOS (256), which starts every chunk;
outputs are distributions over the 256 bytes.
"""

import torch
import torch.nn.functional as F
from torch import nn

from moe_unlearn.config import ExpertModelConfig
from moe_unlearn.data.examples import VOCAB
from moe_unlearn.models.router import byte_ngrams

KV = tuple[torch.Tensor, torch.Tensor]  # one layer's attention keys and values, (B, n_head, T, head_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ExpertModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """Causal attention over x (B, T, C); with `past`, the keys and values (1, nh, P, hs) of a prefix
        that every row of x continues. Returns the output and x's own keys and values."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:  # every row attends to the one shared prefix: one (nh, B*T, P) matmul, no per-row copies
            P, nh, hs = past[0].shape[2], self.n_head, C // self.n_head
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            own = (q @ k.transpose(-2, -1)).masked_fill(future, -torch.inf)  # (B, nh, T, T)
            rows = q.transpose(0, 1).reshape(nh, B * T, hs)
            shared = (rows @ past[0][0].transpose(-2, -1)).view(nh, B, T, P).transpose(0, 1)  # (B, nh, T, P)
            att = (torch.cat([shared, own], dim=-1) * hs**-0.5).softmax(-1)
            on_prefix = att[..., :P].transpose(0, 1).reshape(nh, B * T, P) @ past[1][0]  # (nh, B*T, hs)
            y = on_prefix.view(nh, B, T, hs).transpose(0, 1) + att[..., P:] @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: ExpertModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        attended, kv = self.attn(self.ln1(x), past)
        x = x + self.drop(attended)
        return x + self.drop(self.mlp(self.ln2(x))), kv


class ByteTransformer(nn.Module):
    """Causal LM over bytes: `logits[:, t]` predicts byte t from `inputs[:, :t+1]` (BOS first)."""

    def __init__(self, cfg: ExpertModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(VOCAB + 1, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):  # GPT-2 scaled residual init
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(inputs))

    def hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """The final hidden states (B, T, d_model), before the output head (a router reads the base's)."""
        return self._run(inputs, None)[0]

    def router_features(
        self,
        inputs: torch.Tensor,
        hidden: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        ngrams: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """What a FeatureRouter averages per position (B, T, feature_size(d_model)): the input byte's
        embedding (no position), the final hidden state (`hidden`, when the caller has it) and the hashed
        byte n-grams ending at the input (`context`: the inputs before these, for a continuation). The
        embeddings and n-grams are byte-frequency evidence the hidden states, trained to predict the next
        byte, partly drop: with them, K = 16 domains are told apart at 64 bytes 99.8% of the time, 95.9%
        without the n-grams, 91.1% from the hidden states alone (bench/router_stability.py). `ngrams`:
        the n-grams when the caller has them (a decoder, one position at a time)."""
        hidden = self.hidden(inputs) if hidden is None else hidden
        ngrams = (byte_ngrams(inputs, context) if ngrams is None else ngrams).to(hidden.dtype)
        return torch.cat([self.tok(inputs), hidden, ngrams], dim=-1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-byte logits (..., 256) from hidden states: tied with the byte embeddings."""
        return hidden @ self.tok.weight[:VOCAB].T

    @torch.no_grad()
    def prefill(self, prefix: torch.Tensor) -> tuple[torch.Tensor, list[KV]]:
        """(hidden states (1, P, d_model), per-layer keys and values) of one shared prefix (1, P), BOS
        first; `logits` turns the hidden states into next-byte logits."""
        return self._run(prefix, None)

    @torch.no_grad()
    def extend(self, cache: list[KV], inputs: torch.Tensor) -> torch.Tensor:
        """Hidden states (N, S, d_model) for N continuations (N, S) of the prefix `cache` came from:
        attention over the prefix is computed once for all of them (many candidates after one prompt)."""
        return self._run(inputs, cache)[0]

    def _run(self, inputs: torch.Tensor, cache: list[KV] | None) -> tuple[torch.Tensor, list[KV]]:
        start = 0 if cache is None else cache[0][0].shape[2]
        T = start + inputs.shape[1]
        if self.cfg.block_size < T:
            raise ValueError(f"sequence of {T} bytes is longer than block_size {self.cfg.block_size}")
        x = self.tok(inputs) + self.pos(torch.arange(start, T, device=inputs.device))  # (B, T, C)
        kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            kvs.append(kv)
        return self.ln_f(x), kvs  # (B, T, d_model)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
