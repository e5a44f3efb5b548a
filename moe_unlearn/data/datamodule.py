"""What the models are fed: records cut into byte chunks, in an order set by seeded hashes.

Records are cut into chunks of `block_size` bytes; each chunk is one example that starts with BOS
(the model's likelihood is defined chunk by chunk, the same in training and scoring). The order of
examples in epoch e is the order of sha256(seed, e, example key): a pure function of the record ids.
Batches are then formed from examples of similar length (within windows of that order), which cuts
padding by about a quarter on the built-in corpus, and visited in an order hashed the same way.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from moe_unlearn.data.examples import IGNORE, chunks, lm_example, pad_collate
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import unit_hash

BUCKET_WINDOW = 64  # batches' worth of the hashed order that are sorted by length together


class ExampleDataset(Dataset):
    """Pre-tensorised examples with a stable key each (for hashed ordering)."""

    def __init__(self, keys: list[str], examples: list[tuple[torch.Tensor, torch.Tensor]]):
        self.keys, self.examples = keys, examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.examples[i]


class HashOrderSampler(Sampler[int]):
    """Epoch e visits examples sorted by sha256(seed, e, key); with several processes, each takes a
    disjoint slice (rank::world_size) and no example is repeated to even them out."""

    def __init__(self, keys: list[str], seed: int, rank: int = 0, world_size: int = 1):
        self.keys, self.seed, self.rank, self.world_size = keys, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at the start of every epoch
        self.epoch = epoch

    def order(self) -> list[int]:
        ranked = sorted(range(len(self.keys)), key=lambda i: unit_hash(self.seed, self.epoch, self.keys[i]))
        return ranked[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        return len(range(self.rank, len(self.keys), self.world_size))


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, each holding at most `budget` bytes once padded.

    The sampler's hashed order is cut into windows of `window * budget` bytes; each window is sorted by
    example length (ties keep the hashed order) and cut greedily into batches, so short chunks share a
    batch instead of being padded to a long one. The epoch's batches are visited in the order of
    sha256(seed, epoch, first key). Lightning sets the epoch on `self.sampler`.
    """

    def __init__(self, sampler: HashOrderSampler, lengths: list[int], budget: int, window: int = BUCKET_WINDOW):
        if budget < max(lengths, default=0):
            raise ValueError(f"batch budget of {budget} bytes is smaller than an example of {max(lengths)}")
        self.sampler, self.lengths, self.budget, self.window = sampler, lengths, budget, window

    def batches(self) -> list[list[int]]:
        batches, window, total = [], [], 0
        for i in [*self.sampler.order(), None]:
            if i is not None:
                window.append(i)
                total += self.lengths[i]
            if window and (i is None or total >= self.window * self.budget):
                batches += self._fill(sorted(window, key=lambda j: self.lengths[j]))
                window, total = [], 0
        s = self.sampler
        return sorted(batches, key=lambda b: unit_hash(s.seed, s.epoch, "batch", s.keys[b[0]]))

    def _fill(self, window: list[int]) -> list[list[int]]:
        """Greedy batches over examples sorted by length: add while (count * longest) fits the budget."""
        batches, batch = [], []
        for i in window:
            if batch and (len(batch) + 1) * self.lengths[i] > self.budget:
                batches.append(batch)
                batch = []
            batch.append(i)
        return batches + [batch] if batch else batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class ExampleDataModule(L.LightningDataModule):
    """Feeds one training job (an expert or a router stage) exactly its examples, in hashed order."""

    def __init__(self, dataset: ExampleDataset, batch_size: int, seed: int):
        """`batch_size` counts the longest examples: a batch holds up to batch_size * longest bytes."""
        super().__init__()
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        sampler = HashOrderSampler(self.dataset.keys, self.seed, rank, world)
        lengths = [len(inputs) for inputs, _ in self.dataset.examples]
        batches = LengthBucketBatchSampler(sampler, lengths, self.batch_size * max(lengths))
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=pad_collate)


def expert_dataset(records: list[Record], block_size: int) -> ExampleDataset:
    """Language-modelling examples: every chunk of every record."""
    keys, examples = [], []
    for r in records:
        for j, chunk in enumerate(chunks(r.text.encode("utf-8"), block_size)):
            keys.append(f"{r.id}#{j}")
            examples.append(lm_example(chunk))
    return ExampleDataset(keys, examples)


def router_dataset(
    records: list[Record], labels: list[int], prefix_bytes: int, label_stride: int = 1
) -> ExampleDataset:
    """Routing examples: the first `prefix_bytes` bytes of each record (inputs BOS + bytes, so position
    t sees bytes < t), labelled with the record's expert index at every `label_stride`-th position and
    the last; the other positions are IGNORE (not classified: their neighbours carry the same signal)."""
    keys, examples = [], []
    for r, label in zip(records, labels, strict=True):
        inputs, _ = lm_example(r.text.encode("utf-8")[:prefix_bytes])
        targets = torch.full_like(inputs, IGNORE)
        targets[::label_stride] = label
        targets[-1] = label
        keys.append(r.id)
        examples.append((inputs, targets))
    return ExampleDataset(keys, examples)
