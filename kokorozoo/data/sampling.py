"""The order batches come in: a function of (seed, epoch, process) only, and resumable mid-epoch.

Why not a shuffling ``DataLoader`` with a seeded generator: its generator advances from epoch to
epoch, so a run resumed from a checkpoint (a new process) would re-seed it and see another order,
and Lightning restarts a plain loader's epoch from its first batch, training some dialogues twice
and others never. Here each epoch's permutation is drawn from ``seed`` and ``epoch`` alone, the
place in the epoch travels in the checkpoint (the datamodule's ``state_dict``), and a resumed
epoch skips the batches already trained without loading them.

Several processes (DDP): kokorozoo shards the data itself (the CLI sets
``use_distributed_sampler: false``). Training gives each process every ``world``-th index of the
epoch's permutation, padded with its first indices so every process takes as many steps;
evaluation gives each process a contiguous, unpadded slice, so every dialogue is counted once and
the processes' rows, concatenated in rank order, are the single-process order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Sampler


class EpochSampler(Sampler[int]):
    """One process's indices of a part for the current epoch (see the module docstring)."""

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The whole part's order this epoch, the same in every process."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        if self.world == 1:
            return iter(order)
        if self.shuffle:  # training: equal shares, so every process takes the same number of steps
            share = math.ceil(self.size / self.world)
            padded = order + order[: share * self.world - self.size]
            return iter(padded[self.rank :: self.world])
        start, stop = _slice(self.size, self.rank, self.world)
        return iter(order[start:stop])

    def __len__(self) -> int:
        if self.world == 1:
            return self.size
        if self.shuffle:
            return math.ceil(self.size / self.world)
        start, stop = _slice(self.size, self.rank, self.world)
        return stop - start


def _slice(size: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice of ``size`` items that process ``rank`` of ``world`` evaluates (the
    first ``size % world`` processes take one more)."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class ResumableBatchSampler(BatchSampler):
    """Batches of an :class:`EpochSampler`; the first pass may start ``skip`` batches into the
    epoch (a resumed run: the batches its checkpoint had already trained)."""

    def __init__(self, sampler: EpochSampler, batch_size: int, drop_last: bool = False, skip: int = 0):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch
