"""What a FeatureRouter's stages train on: the frozen base model's features of each record's prefix.

For a record, the base reads BOS + its first `prefix_bytes` bytes; the feature after p bytes is the
running mean of the base's byte embeddings and hidden states, and of the hashed byte n-grams, at
positions 0..p (models/router.py; LAYOUT), taken at the probe lengths 1, 2, 4, ..., prefix_bytes. Each
record is computed on its own (batch of one, its exact length), so its features are a pure function of
the base weights and its text, whatever else a build computes: a new version keeps the rows of the
records it still has, bit for bit, and computes only new records'. An expert's file holds every
training record of it, so a forget that changes which records the stages sample computes nothing; a
stage then trains a small head on stored vectors.
"""

import torch

from moe_unlearn.data.examples import BOS
from moe_unlearn.data.records import Record
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import NGRAM_BUCKETS, feature_size, running_mean

Tensors = dict[str, torch.Tensor]
LAYOUT = f"embeddings+hidden+ngrams{NGRAM_BUCKETS}"  # in the lineage of feature files and stages: files of
# another layout retrain


def probe_lengths(prefix_bytes: int) -> list[int]:
    """Prefix lengths (bytes seen) the features are taken at: powers of two up to prefix_bytes, and it."""
    lengths, p = [], 1
    while p < prefix_bytes:
        lengths.append(p)
        p *= 2
    return [*lengths, prefix_bytes]


@torch.no_grad()
def record_features(base: ByteTransformer, text: str, prefix_bytes: int) -> torch.Tensor:
    """(probes, feature_size(d_model)) features of one record (a prefix shorter than a probe repeats its last one)."""
    data = text.encode("utf-8")[:prefix_bytes]
    means = running_mean(base.router_features(torch.tensor([[BOS, *data]])))[0]  # (len + 1, 2C): p bytes seen
    return means[[min(p, len(data)) for p in probe_lengths(prefix_bytes)]]


def features_tensors(
    base: ByteTransformer, records: list[Record], prefix_bytes: int, known: dict[str, torch.Tensor]
) -> tuple[Tensors, int]:
    """An expert's features file: rows in `records` order (`known` rows reused, the others computed) and
    the ids, newline-joined as bytes. Returns (tensors, rows computed)."""
    base = base.eval()
    rows, computed = [], 0
    for r in records:
        row = known.get(r.id)
        if row is None:
            row, computed = record_features(base, r.text, prefix_bytes), computed + 1
        rows.append(row)
    ids = torch.frombuffer(bytearray("\n".join(r.id for r in records).encode("utf-8")), dtype=torch.uint8)
    d = feature_size(base.cfg.d_model)
    stacked = torch.stack(rows) if rows else torch.zeros(0, len(probe_lengths(prefix_bytes)), d)
    return {"features": stacked.contiguous(), "ids": ids.clone()}, computed


def read_features(tensors: Tensors) -> dict[str, torch.Tensor]:
    """Record id -> (probes, d_model) features, from a features file's tensors."""
    text = bytes(tensors["ids"].tolist()).decode("utf-8")
    ids = text.split("\n") if text else []
    return dict(zip(ids, tensors["features"], strict=True))
