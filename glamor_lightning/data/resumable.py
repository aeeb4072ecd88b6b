"""A DataLoader that Lightning can resume mid-epoch: it saves its place in the epoch in checkpoints.

Lightning (2.x) calls `state_dict()` on every training loader that has `state_dict` / `load_state_dict`
when it saves a checkpoint, and `load_state_dict()` before it iterates again when it resumes a run
that stopped mid-epoch. The loader counts the batches it has handed out in the current epoch; on a
resume it tells its `EpochSampler` to start that many batches into the same epoch, so no sample is
seen twice or missed and no skipped sample is loaded. `len()` stays the full epoch's length, as
Lightning's batch counters expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from glamor_lightning.data.sampler import EpochSampler


class ResumableDataLoader(DataLoader):
    """`DataLoader` over an `EpochSampler` (with a batch size) that resumes mid-epoch; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler) or self.batch_size is None:
            raise TypeError("ResumableDataLoader needs an EpochSampler and a batch_size")
        self._epoch = 0
        self._yielded = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip at the next iteration

    def __iter__(self) -> Iterator[Any]:  # a generator: runs at the first next(), after set_epoch
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        skip = 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if epoch == sampler.epoch and 0 < batches < len(self):
                skip = batches
        sampler.skip_next(skip * self.batch_size)
        self._epoch, self._yielded = sampler.epoch, skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))
        self.sampler.set_epoch(int(state_dict["epoch"]))  # type: ignore[attr-defined]
