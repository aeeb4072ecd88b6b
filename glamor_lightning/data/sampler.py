"""A sampler that fixes each epoch's order by (seed, epoch) and shards it over DDP ranks itself.

It yields `(epoch, index)` keys, so the dataset seeds each sample's augmentation from them: the same
run gives the same batches whatever the number of workers (persistent or not), and a resumed run
sees the order it would have seen. Evaluation shards are not padded, so under DDP every sample is
counted exactly once (torchmetrics syncs the uneven shards at epoch end).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    def __init__(
        self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self._skip = 0

    def skip_next(self, n: int) -> None:
        """Start the next iteration `n` samples into this epoch's shard (a mid-epoch resume)."""
        self._skip = max(0, int(n))

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """This epoch's indices for this rank."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and self.size:
            total = math.ceil(self.size / self.world_size) * self.world_size
            order += (order * math.ceil(total / self.size))[: total - self.size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self._skip = self._skip, 0
        return iter((self.epoch, i) for i in self.order()[skip:])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))
