"""Data path throughput: how fast a DataLoader hands over augmented training batches.

- `decode`: per sample, as the authors' code works: read and decode the PNG (`images.read_rgb`), cut
  the face box and resize it to 96×96, zero the box in the image and resize it to 128×171
  (`geometry`), then augment (`transforms.PairTransform`, the package's default OpenCV path).
- `cache`: the packed uint8 cache (`PackedDataset` + `PairTransform`): no decoding; the per-sample
  augmentation remains.
- `cache_batched`: the cache with augmentation per batch (`device_augment.DeviceAugment`, what
  `augment_on=device` does), here run on the CPU in the main process after the loader.
- `cache_albumentations`: the cache with the same recipe through albumentations
  (`data.augment_backend=albumentations`), to show what albumentations' per-call overhead costs.

Each through a DataLoader (batch as the other figures, num_workers 0 and 2), over the same images
(the training split of the benchmark root, cycled), augmentation on. The cache is built before
timing and is not part of any figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Settings, Timing, log, measure
from glamor_lightning.data.cache import CacheSpec, ensure_cache
from glamor_lightning.data.classes import class_index
from glamor_lightning.data.dataset import PackedDataset
from glamor_lightning.data.device_augment import DeviceAugment, PassThrough
from glamor_lightning.data.geometry import face_crop, masked_context
from glamor_lightning.data.images import read_rgb
from glamor_lightning.data.index import INDEX_NAME, FaceRow, read_index
from glamor_lightning.data.transforms import AlbumentationsPairTransform, PairTransform

WORKERS = (0, 2)


class DecodeDataset(Dataset):
    """The per-sample decode path: PNG → face crop + masked context → augmentation."""

    def __init__(self, root: Path, rows: list[FaceRow], indices: np.ndarray, transform) -> None:
        self.root, self.rows, self.indices, self.transform = root, rows, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = self.rows[int(self.indices[i])]
        image = read_rgb(self.root / row.path)
        face, context = self.transform(face_crop(image, row.box), masked_context(image, row.box), i)
        return (
            torch.from_numpy(np.ascontiguousarray(face)),
            torch.from_numpy(np.ascontiguousarray(context)),
            class_index(row.label),
            i,
        )


class _Cycle(torch.utils.data.Sampler):
    """Indices 0..n-1 in a fixed shuffled order, repeated `times` times."""

    def __init__(self, n: int, times: int, seed: int) -> None:
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        self.times = times

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.times):
            yield from self.order

    def __len__(self) -> int:
        return len(self.order) * self.times


def _loader_timing(dataset: Dataset, workers: int, s: Settings, batch_augment=None) -> Timing:
    loader = DataLoader(
        dataset,
        batch_size=s.batch,
        sampler=_Cycle(len(dataset), 10_000, s.seed),
        num_workers=workers,
        persistent_workers=False,
    )
    it = iter(loader)

    def next_batch():
        face, context, *_ = next(it)
        if batch_augment is not None:
            batch_augment(face, context)

    # with workers, a repeat spans several prefetched batches so the queue does not flatter it
    timing = measure(next_batch, s.batch, s, at_least=4 if workers else 1)
    it = None  # free the loader before the next cell (not del: next_batch closes over it)
    return timing


def run(root: Path, s: Settings) -> dict:
    rows = read_index(root / INDEX_NAME)
    train = np.array([i for i, r in enumerate(rows) if r.split == "train" and r.has_face])
    rng = np.random.default_rng(s.seed)
    idx = np.sort(rng.choice(train, size=min(len(train), s.data_images), replace=False))
    cache = ensure_cache(root, rows, CacheSpec(), workers=0 if s.quick else 2, progress=False)
    log(f"data path: {len(idx)} images of {root}, cache {cache.path}")
    aug = PairTransform(train=True, seed=s.seed)
    datasets = {
        "decode": (DecodeDataset(root, rows, idx, aug), None),
        "cache": (PackedDataset(cache, idx, aug), None),
        "cache_batched": (PackedDataset(cache, idx, PassThrough()), DeviceAugment(seed=s.seed)),
        "cache_albumentations": (PackedDataset(cache, idx, AlbumentationsPairTransform(train=True, seed=s.seed)), None),
    }
    out: dict[str, dict[str, Timing]] = {}
    for workers in WORKERS:
        out[str(workers)] = {}
        for name, (dataset, batch_augment) in datasets.items():
            t = _loader_timing(dataset, workers, s, batch_augment)
            out[str(workers)][name] = t
            log(f"data path {name:13s} workers {workers}: {t.median:8.1f} img/s")
    size = read_rgb(root / rows[int(idx[0])].path).shape[1::-1] if len(idx) else None
    return {"timings": out, "images": int(len(idx)), "image_size": list(size) if size else None}
