import torch

from moe_unlearn.data.datamodule import ExampleDataset, HashOrderSampler, LengthBucketBatchSampler
from moe_unlearn.data.examples import pad_collate


def make_sampler(lengths, budget, seed=0, keys=None, window=4):
    keys = keys or [f"r{i}" for i in range(len(lengths))]
    return LengthBucketBatchSampler(HashOrderSampler(keys, seed), lengths, budget, window)


def test_every_example_once_per_epoch_within_budget():
    lengths = [(i * 37) % 256 + 1 for i in range(500)]
    batches = make_sampler(lengths, budget=4 * 256).batches()
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 4 * 256 for b in batches)


def test_short_examples_share_batches_and_padding_shrinks():
    lengths = [256 if i % 2 else 40 for i in range(400)]
    sampler = make_sampler(lengths, budget=4 * 256)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in sampler.batches())
    assert padded < 1.05 * sum(lengths)  # batches of 4 in hashed order would pad most of them to 256
    assert len(sampler) < 400 / 4


def test_uniform_lengths_give_fixed_size_batches():
    batches = make_sampler([128] * 100, budget=32 * 128).batches()
    assert sorted(len(b) for b in batches) == [4, 32, 32, 32]


def test_order_is_a_function_of_keys_seed_and_epoch():
    lengths = [(i * 13) % 200 + 1 for i in range(300)]
    a, b = make_sampler(lengths, 800), make_sampler(lengths, 800)
    assert a.batches() == b.batches()
    first = a.batches()
    a.sampler.set_epoch(1)
    assert a.batches() != first
    assert make_sampler(lengths, 800, seed=1).batches() != first


def test_batches_pad_to_their_longest_example():
    data = ExampleDataset(
        ["a", "b"], [(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4])), (torch.tensor([5]), torch.tensor([6]))]
    )
    inputs, targets = pad_collate([data[0], data[1]])
    assert inputs.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert targets.tolist() == [[2, 3, 4], [6, -100, -100]]


def test_router_examples_label_every_stride_th_position_and_the_last():
    from moe_unlearn.data.datamodule import router_dataset
    from moe_unlearn.data.examples import IGNORE
    from moe_unlearn.data.records import Record

    records = [Record("a-1", "a", "x" * 50), Record("b-1", "b", "yz")]
    data = router_dataset(records, [0, 1], prefix_bytes=10, label_stride=4)
    inputs, labels = data[0]
    assert len(inputs) == 10  # BOS + the first 9 bytes: position t sees bytes < t
    assert labels.tolist() == [0, IGNORE, IGNORE, IGNORE, 0, IGNORE, IGNORE, IGNORE, 0, 0]
    assert data[1][1].tolist() == [1, 1]  # a short record: BOS and its last position
