"""Map-style dataset over a packed cache: (face, context, label) as uint8 HWC tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glamor_lightning.data.cache import PackedCache
from glamor_lightning.data.reveal import ContextReveal
from glamor_lightning.data.transforms import PairTransform

Sample = tuple[torch.Tensor, torch.Tensor, int, int]  # face, context, label, row in faces.csv


class PackedDataset(Dataset[Sample]):
    """Rows `indices` of a cache, augmented by `transform`; samples carry their faces.csv row.

    Tensors stay uint8 and HWC: the batch is 4× smaller than float, and the LightningModule turns it
    into float NCHW (a free permute that is channels-last in memory).
    Keys are `(epoch, i)` from `EpochSampler`, or a plain `i`. With `reveal`, a sample's context comes
    from the unmasked contexts when the curriculum says so for its (epoch, row) (`reveal.ContextReveal`).
    """

    def __init__(
        self,
        cache: PackedCache,
        indices: Sequence[int],
        transform: PairTransform,
        reveal: ContextReveal | None = None,
    ) -> None:
        self.cache, self.indices, self.transform = cache, np.asarray(indices, dtype=np.int64), transform
        self.reveal = reveal

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        row = int(self.indices[i])
        contexts = self.cache.contexts
        if self.reveal is not None and self.reveal.reveals(epoch, row):
            contexts = self.reveal.contexts
        face, context = self.transform(self.cache.faces[row], contexts[row], row, epoch)
        return (
            torch.from_numpy(np.array(face)),  # a copy: the cache is read-only
            torch.from_numpy(np.array(context)),
            int(self.cache.labels[row]),
            row,
        )

    @property
    def labels(self) -> np.ndarray:
        return self.cache.labels[self.indices]
