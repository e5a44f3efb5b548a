"""What the models are fed: records cut into byte chunks, in an order set by seeded hashes.

Records are cut into chunks of `block_size` bytes; each chunk is one example that starts with BOS
(the model's likelihood is defined chunk by chunk, the same in training and scoring). The order of
examples in epoch e is the order of sha256(seed, e, example key): a pure function of the record ids.
Batches are then formed from examples of similar length (within windows of that order), which cuts
padding by about a quarter on the built-in corpus, and visited in an order hashed the same way.

With several processes (DDP) the batches are formed once, over all examples, exactly as for one
process, and then dealt out: process r takes batches r, r + W, r + 2W, ... of the epoch. DDP needs
every process to take the same number of steps, so when the count is not a multiple of W the largest
batches are split in two first: no example is repeated (no padding sampler) and none is dropped.
"""

import hashlib
from collections.abc import Iterable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from moe_unlearn.data.examples import IGNORE, chunks, lm_example, pad_collate
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import unit_hash
from moe_unlearn.errors import UserError

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
    """Epoch e visits examples sorted by sha256(seed, e, key): the same order in every process (the
    batch sampler deals the batches out to the processes)."""

    def __init__(self, keys: list[str], seed: int):
        self.keys, self.seed = keys, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at the start of every epoch
        self.epoch = epoch

    def order(self) -> list[int]:
        return sorted(range(len(self.keys)), key=lambda i: unit_hash(self.seed, self.epoch, self.keys[i]))

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        return len(self.keys)


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, each holding at most `budget` bytes once padded; with `world_size`
    processes, this process's share of them (`rank`).

    The sampler's hashed order is cut into windows of `window * budget` bytes; each window is sorted by
    example length (ties keep the hashed order) and cut greedily into batches, so short chunks share a
    batch instead of being padded to a long one. The epoch's batches are visited in the order of
    sha256(seed, epoch, first key), and dealt out round-robin to the processes. Lightning sets the
    epoch on `self.sampler`; `current` holds the batches of the epoch being iterated.
    """

    def __init__(
        self,
        sampler: HashOrderSampler,
        lengths: list[int],
        budget: int,
        window: int = BUCKET_WINDOW,
        rank: int = 0,
        world_size: int = 1,
    ):
        if budget < max(lengths, default=0):
            raise ValueError(f"batch budget of {budget} bytes is smaller than an example of {max(lengths)}")
        self.sampler, self.lengths, self.budget, self.window = sampler, lengths, budget, window
        self.rank, self.world_size = rank, world_size
        self.current: list[list[int]] = []
        self._epoch_batches: tuple[int, list[list[int]]] | None = None

    def batches(self) -> list[list[int]]:
        """This epoch's batches, computed once per epoch (Lightning asks for their number several times
        a fit, and each computation hashes every key)."""
        epoch = self.sampler.epoch
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, self._batches())
        return self._epoch_batches[1]

    def _batches(self) -> list[list[int]]:
        batches, window, total = [], [], 0
        for i in [*self.sampler.order(), None]:
            if i is not None:
                window.append(i)
                total += self.lengths[i]
            if window and (i is None or total >= self.window * self.budget):
                batches += self._fill(sorted(window, key=lambda j: self.lengths[j]))
                window, total = [], 0
        s = self.sampler
        batches = sorted(batches, key=lambda b: unit_hash(s.seed, s.epoch, "batch", s.keys[b[0]]))
        if self.world_size == 1:
            return batches
        return split_evenly(batches, self.world_size)[self.rank :: self.world_size]

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
        self.current = self.batches()
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.batches())


def split_evenly(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """`batches` with the largest (the first of equals) split in two where it stands, until their number
    is a multiple of `world_size`: every process then gets as many batches, without repeating an example."""
    batches = list(batches)
    while len(batches) % world_size:
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[i]) < 2:
            raise UserError(
                f"{len(batches)} examples, one per batch, cannot be shared evenly by {world_size} processes "
                "without repeating one: use a larger batch_size or fewer devices"
            )
        half = len(batches[i]) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


def keys_digest(keys: Iterable[str]) -> int:
    """An order-free digest of a set of example keys (ids, never text): the sum of their sha256 (first
    63 bits) modulo 2^63. Digests of disjoint sets add up to the digest of their union, so per-process
    digests and counts show the processes of a DDP fit shared the examples out exactly."""
    return sum(int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") >> 1 for k in keys) % 2**63


class ExampleDataModule(L.LightningDataModule):
    """Feeds one training job (an expert or a router stage) exactly its examples, in hashed order."""

    def __init__(self, dataset: ExampleDataset, batch_size: int, seed: int, collate=pad_collate):
        """`batch_size` counts the longest examples: a batch holds up to batch_size * longest bytes."""
        super().__init__()
        self.dataset, self.batch_size, self.seed, self.collate = dataset, batch_size, seed, collate

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        sampler = HashOrderSampler(self.dataset.keys, self.seed)
        lengths = [len(inputs) for inputs, _ in self.dataset.examples]
        budget = self.batch_size * max(lengths)
        batches = LengthBucketBatchSampler(sampler, lengths, budget, rank=rank, world_size=world)
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate)


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


def feature_dataset(records: list[Record], labels: list[int], features: dict[str, torch.Tensor]) -> ExampleDataset:
    """Routing examples for a FeatureRouter: each record's base features at its probe lengths
    (training/features.py), every one labelled with the record's expert index."""
    keys, examples = [], []
    for r, label in zip(records, labels, strict=True):
        rows = features[r.id]  # (probes, d_model)
        keys.append(r.id)
        examples.append((rows, torch.full((len(rows),), label, dtype=torch.long)))
    return ExampleDataset(keys, examples)


def stack_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples of one shape (feature rows) stacked into a batch."""
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])
