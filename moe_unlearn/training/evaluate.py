"""Held-out evaluation of a composed model: bits per byte per source, router accuracy by prefix length.

Only held-out records are used, and only for reporting: nothing here feeds back into training.
"""

import math

import torch

from moe_unlearn.data.examples import BOS, IGNORE, chunks, lm_example, pad_collate
from moe_unlearn.data.records import Record
from moe_unlearn.models.moe import MixtureOfExperts

PREFIX_LENGTHS = (16, 32, 64)


@torch.no_grad()
def bits_per_byte(model: MixtureOfExperts, records: list[Record], batch_size: int = 32) -> float:
    """Total bits / total bytes of the records under the composed model (chunked as in training)."""
    examples = [lm_example(c) for r in records for c in chunks(r.text.encode("utf-8"), model.block_size)]
    bits, n = 0.0, 0
    for start in range(0, len(examples), batch_size):
        inputs, targets = pad_collate(examples[start : start + batch_size])
        log_p, _ = model(inputs)
        mask = targets != IGNORE
        picked = log_p.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        bits -= picked[mask].sum().item() / math.log(2)
        n += int(mask.sum())
    return bits / n if n else float("nan")


@torch.no_grad()
def router_accuracy(model, records: list[Record], labels: list[int], prefix: int) -> float:
    """Share of records whose first `prefix` bytes make the router pick their own expert first: the
    router of a MixtureOfExperts, or a byte Router itself."""
    route = model.router_logits if isinstance(model, MixtureOfExperts) else model
    if isinstance(model, MixtureOfExperts):  # BOS and the prefix must fit the base's context
        prefix = min(prefix, model.block_size - 1)
    if not records:
        return float("nan")
    correct = 0
    for start in range(0, len(records), 64):
        part = records[start : start + 64]
        data = [r.text.encode("utf-8")[:prefix] for r in part]
        inputs = torch.zeros(len(part), max(len(d) for d in data) + 1, dtype=torch.long)
        for i, d in enumerate(data):
            inputs[i, : len(d) + 1] = torch.tensor([BOS, *d])
        logits = route(inputs)  # (N, T, K): position len(d) has seen the whole prefix
        last = torch.tensor([len(d) for d in data])
        top1 = logits[torch.arange(len(part)), last].argmax(-1)
        correct += int((top1 == torch.tensor(labels[start : start + 64])).sum())
    return correct / len(records)


def evaluate(model: MixtureOfExperts, heldout: dict[str, list[Record]], expert_of: dict[str, str]) -> dict:
    """{"heldout_bpb": {source: bpb}, "router_top1": {"16": acc, ...}, "heldout_records": {source: n}}."""
    index = {name: i for i, name in enumerate(model.names[: len(model.experts)])}  # what the router chooses among
    every = [r for records in heldout.values() for r in records if expert_of[r.source] in index]
    labels = [index[expert_of[r.source]] for r in every]
    return {
        "heldout_bpb": {s: round(bits_per_byte(model, recs), 4) for s, recs in heldout.items() if recs},
        "heldout_records": {s: len(recs) for s, recs in heldout.items()},
        "router_top1": {str(p): round(router_accuracy(model, every, labels, p), 4) for p in PREFIX_LENGTHS},
    }
