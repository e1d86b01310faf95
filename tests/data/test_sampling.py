"""The order of batches: a function of (seed, epoch, process), resumable mid-epoch, and sharded so
that evaluation counts every item once."""

import pytest

from kokorozoo.data.sampling import EpochSampler, ResumableBatchSampler


def test_the_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(50, shuffle=True, seed=3), EpochSampler(50, shuffle=True, seed=3)
    a.set_epoch(1)
    list(a)  # drawing an epoch changes nothing for the next one
    b.set_epoch(1)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(2)
    assert list(b) != list(a)
    assert list(EpochSampler(50, shuffle=True, seed=4)) != list(EpochSampler(50, shuffle=True, seed=3))
    assert list(EpochSampler(7, shuffle=False)) == list(range(7))


def test_a_resumed_epoch_skips_exactly_the_trained_batches():
    trained = 3
    first = ResumableBatchSampler(EpochSampler(23, shuffle=True, seed=0), batch_size=4)
    first.sampler.set_epoch(1)
    uninterrupted = list(first)

    resumed = ResumableBatchSampler(EpochSampler(23, shuffle=True, seed=0), batch_size=4, skip=trained)
    resumed.sampler.set_epoch(1)
    assert list(resumed) == uninterrupted[trained:]  # each item of the epoch once: before the kill or after
    assert list(resumed) == uninterrupted  # the next pass is a whole epoch again
    assert len(resumed) == len(uninterrupted) == 6


@pytest.mark.parametrize("size, world", [(31, 2), (5, 3), (2, 4), (32, 2)])
def test_evaluation_shards_cover_every_item_once_in_order(size, world):
    shards = [list(EpochSampler(size, shuffle=False, rank=r, world=world)) for r in range(world)]
    assert [i for shard in shards for i in shard] == list(range(size))
    assert [len(EpochSampler(size, shuffle=False, rank=r, world=world)) for r in range(world)] == list(map(len, shards))


@pytest.mark.parametrize("size, world", [(31, 2), (5, 3)])
def test_training_shares_are_equal_and_cover_the_epoch(size, world):
    samplers = [EpochSampler(size, shuffle=True, seed=1, rank=r, world=world) for r in range(world)]
    shares = [list(s) for s in samplers]
    assert len({len(share) for share in shares}) == 1 == len({len(s) for s in samplers})
    assert set().union(*shares) == set(range(size))
