import pytest
import torch

from moe_unlearn import UserError
from moe_unlearn.data.datamodule import ExampleDataset, HashOrderSampler, LengthBucketBatchSampler, keys_digest
from moe_unlearn.data.examples import pad_collate


def make_sampler(lengths, budget, seed=0, keys=None, window=4, rank=0, world_size=1):
    keys = keys or [f"r{i}" for i in range(len(lengths))]
    return LengthBucketBatchSampler(HashOrderSampler(keys, seed), lengths, budget, window, rank, world_size)


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


def test_an_epochs_batches_are_computed_once(monkeypatch):
    """Lightning asks for the number of batches several times a fit; each computation hashes every key."""
    sampler = make_sampler([(i * 13) % 200 + 1 for i in range(300)], 800)
    orders = []
    order = sampler.sampler.order
    monkeypatch.setattr(sampler.sampler, "order", lambda: orders.append(1) or order())
    assert len(sampler) == len(sampler) == len(list(sampler))
    assert len(orders) == 1
    sampler.sampler.set_epoch(1)
    assert list(sampler) == sampler.batches() and len(orders) == 2


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


@pytest.mark.parametrize("world", [2, 3, 8])
@pytest.mark.parametrize("epoch", [0, 1])
def test_processes_get_as_many_batches_and_every_example_once(world, epoch):
    lengths = [(i * 37) % 256 + 1 for i in range(501)]
    whole = make_sampler(lengths, budget=4 * 256)
    whole.sampler.set_epoch(epoch)
    shares = []
    for rank in range(world):
        sampler = make_sampler(lengths, budget=4 * 256, rank=rank, world_size=world)
        sampler.sampler.set_epoch(epoch)
        shares.append(sampler.batches())
    assert len({len(share) for share in shares}) == 1  # DDP: every process takes the same steps
    assert sorted(i for share in shares for b in share for i in b) == list(range(501))  # none twice, none left
    # The single-process batches, dealt round-robin, a few of the largest split in two.
    single = whole.batches()
    assert len(single) <= len(shares[0]) * world < len(single) + world
    dealt = [b for step in zip(*shares, strict=True) for b in step]
    assert [b for b in dealt if b in single] == [b for b in single if b in dealt]  # same order


def test_batches_of_one_example_that_cannot_be_shared_evenly_are_an_error():
    with pytest.raises(UserError, match="cannot be shared evenly by 2 processes"):
        make_sampler([256] * 5, budget=256, rank=0, world_size=2).batches()


def test_keys_digest_of_disjoint_sets_adds_up():
    keys = [f"r{i}#0" for i in range(100)]
    assert (keys_digest(keys[:30]) + keys_digest(keys[30:])) % 2**63 == keys_digest(keys)
    assert keys_digest(keys[:30] + keys[29:]) != keys_digest(keys)  # a repeated key shows
    assert keys_digest(reversed(keys)) == keys_digest(keys)
