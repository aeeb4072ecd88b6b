"""LightningDataModule for any root with a `faces.csv`: splits, packed cache, loaders."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from glamor_lightning.data.cache import CacheSpec, PackedCache, ensure_cache
from glamor_lightning.data.dataset import PackedDataset
from glamor_lightning.data.device_augment import DeviceAugment, PassThrough
from glamor_lightning.data.geometry import CONTEXT_SIZE, CROP_SIZE, FACE_SIZE
from glamor_lightning.data.index import INDEX_NAME, FaceRow, check_data_root, read_index
from glamor_lightning.data.resumable import ResumableDataLoader
from glamor_lightning.data.reveal import ContextReveal, check_reveal
from glamor_lightning.data.sampler import EpochSampler
from glamor_lightning.data.splits import check_folders, check_stage_splits, split_indices
from glamor_lightning.data.transforms import AUGMENT_BACKENDS, make_pair_transform

log = logging.getLogger(__name__)
NO_FACE_POLICIES = ("whole_image", "drop")
AUGMENT_ON = ("cpu", "device")


class EmotionDataModule(L.LightningDataModule):
    """Face crops and masked contexts from a packed cache of `root`.

    `batch_size` is per device (the global batch is batch_size × devices × nodes). `mask_face=None`
    is resolved by `EmotionModule.bind_data` (`context_visible` does not mask). Rows without a face follow `no_face`:
    `whole_image` (face input = whole image, nothing masked) or `drop`; unreadable images are skipped,
    counted and named in the log.

    `augment_on`: where training augmentation runs. `cpu` (default): per sample in the loader
    (`transforms.PairTransform`; `augment_backend=albumentations` for the albumentations version).
    `device`: the training loader yields the cached arrays as they are (face 96×96, the full 128×171
    context) and `on_after_batch_transfer` augments each training batch where it landed (the GPU), with
    `device_augment.DeviceAugment`: the same flip, rotation and random crop, seeded from (seed, epoch,
    batch, rank). Validation and test batches are centre-cropped on the CPU in both cases. Kept while
    the performance issue measures whether it pays on a GPU (on the H200 it was slower than `cpu` for
    two of three backbones).

    `context_reveal` > 0 (with `context_reveal_epochs`): a curriculum in which that share of training
    contexts shows the face in the first epoch, falling linearly to none at `context_reveal_epochs`
    (`reveal.ContextReveal`; a second cache of unmasked contexts is built for it). Validation and test
    contexts are always masked as the model's setting says.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_from: str = "auto",
        val_fraction: float = 0.1,
        seed: int = 0,
        mask_face: bool | None = None,
        no_face: str = "whole_image",
        augment: bool = True,
        flip: bool = True,
        rotate_limit: float = 20.0,
        face_size: int = FACE_SIZE,
        context_size: tuple[int, int] = CONTEXT_SIZE,
        crop_size: int = CROP_SIZE,
        cache_dir: str | None = None,
        cache_workers: int = 2,
        eval_batch_size: int | None = None,
        persistent_workers: bool = False,
        augment_on: str = "cpu",
        augment_backend: str = "opencv",
        context_reveal: float = 0.0,
        context_reveal_epochs: int = 0,
    ) -> None:
        super().__init__()
        check_reveal(context_reveal, context_reveal_epochs)
        context_size = (int(context_size[0]), int(context_size[1]))  # plain values in checkpoints
        if no_face not in NO_FACE_POLICIES:
            raise ValueError(f"no_face={no_face!r}; expected one of {NO_FACE_POLICIES}")
        if augment_backend not in AUGMENT_BACKENDS:
            raise ValueError(f"augment_backend={augment_backend!r}; expected one of {AUGMENT_BACKENDS}")
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on={augment_on!r}; expected one of {AUGMENT_ON}")
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.mask_face = mask_face
        self.cache: PackedCache | None = None
        self.visible_cache: PackedCache | None = None  # unmasked contexts, for context_reveal
        self.rows: list[FaceRow] = []
        self.indices: dict[str, np.ndarray] = {}
        self.skipped: dict[str, int] = {}
        #: the batch augmentation of the training split when augment_on='device' (else None)
        self.device_augment = None
        if augment_on == "device" and augment:
            self.device_augment = DeviceAugment(crop_size=crop_size, flip=flip, rotate_limit=rotate_limit, seed=seed)

    # -- data preparation -------------------------------------------------------------------------
    def _read_rows(self) -> list[FaceRow]:
        check_data_root(self.root)
        rows = read_index(self.root / INDEX_NAME)
        check_folders(rows, str(self.root / INDEX_NAME))
        return rows

    def _spec(self) -> CacheSpec:
        h, w = self.hparams.context_size
        return CacheSpec(self.hparams.face_size, h, w, True if self.mask_face is None else self.mask_face)

    def _cache(self, rows: list[FaceRow], progress: bool, spec: CacheSpec | None = None) -> PackedCache:
        cache_dir = Path(self.hparams.cache_dir) if self.hparams.cache_dir else None
        return ensure_cache(
            self.root, rows, spec or self._spec(), cache_dir, workers=self.hparams.cache_workers, progress=progress
        )

    def _reveals(self) -> bool:
        """Whether training uses the context-reveal curriculum (refused where contexts are not masked)."""
        if not self.hparams.get("context_reveal", 0.0):
            return False
        if not self._spec().mask_face:
            raise ValueError(
                "data.context_reveal reveals the masked face, but these contexts are not masked "
                "(model.inputs=context_visible or data.mask_face=false): set data.context_reveal=0"
            )
        return True

    def _visible_cache(self, progress: bool) -> PackedCache:
        h, w = self.hparams.context_size
        return self._cache(self.rows, progress, CacheSpec(self.hparams.face_size, h, w, mask_face=False))

    def prepare_data(self) -> None:
        """Build the cache once (Lightning calls this on one process per node), and keep it for this
        process's `setup`: looking a cache up stats every image (`cache.image_identity`)."""
        self.rows = self._read_rows()
        self.cache = self._cache(self.rows, progress=True)
        if self._reveals():
            self.visible_cache = self._visible_cache(progress=True)

    def setup(self, stage: str | None = None) -> None:
        """Read the index, open (or build) the cache and split it once; on every call, check that the
        splits `stage` reads hold images (an error before any training, not a run on nothing)."""
        if self.cache is None:  # a process that did not prepare the data (DDP ranks > 0 of a node)
            self.rows = self._read_rows()
            self.cache = self._cache(self.rows, progress=False)
        if self.visible_cache is None and self._reveals():
            self.visible_cache = self._visible_cache(progress=False)
        if not self.indices:
            indices = split_indices(self.rows, self.hparams.val_from, self.hparams.val_fraction, self.hparams.seed)
            self.indices = {split: self._keep(split, idx) for split, idx in indices.items()}
            log.info("data %s: %s", self.root, ", ".join(f"{k} {len(v)}" for k, v in self.indices.items()))
        check_stage_splits(self.indices, stage, str(self.root / INDEX_NAME), self._left_out())

    def _left_out(self) -> list[str]:
        """Why rows of faces.csv are in no split (for the error on an empty split)."""
        hp, notes = self.hparams, []
        for split in self.indices:
            if n := self.skipped.get(f"{split}/unreadable"):
                notes.append(f"{split}: {n} unreadable images left out")
            if hp.no_face == "drop" and (n := self.skipped.get(f"{split}/no_face_drop")):
                notes.append(f"{split}: {n} without a face left out (no_face='drop')")
        if not len(self.indices.get("val", ())):
            notes.append(f"val comes from data.val_from={hp.val_from!r}, data.val_fraction={hp.val_fraction}")
        return notes

    def _keep(self, stage: str, idx: np.ndarray) -> np.ndarray:
        """Apply the unreadable-image and no-face policies, counting what is left out."""
        assert self.cache is not None
        unreadable = idx[~self.cache.ok[idx]]
        for i in unreadable[:20]:
            log.warning("skipped %s: %s", self.rows[i].path, self.cache.errors.get(self.rows[i].path))
        keep = self.cache.ok[idx]
        no_face = np.array([not self.rows[i].has_face for i in idx], dtype=bool)
        if self.hparams.no_face == "drop":
            keep &= ~no_face
        self.skipped[f"{stage}/unreadable"] = int(len(unreadable))
        self.skipped[f"{stage}/no_face_{self.hparams.no_face}"] = int((no_face & self.cache.ok[idx]).sum())
        if len(unreadable) or no_face.any():
            log.warning(
                "%s: %d unreadable images skipped; %d without a face (%s)",
                stage,
                len(unreadable),
                int(no_face.sum()),
                self.hparams.no_face,
            )
        return idx[keep]

    # -- loaders ----------------------------------------------------------------------------------
    def dataset(self, stage: str) -> PackedDataset:
        assert self.cache is not None, "call setup() first"
        train = stage == "train"
        hp = self.hparams
        reveal = None
        if train and self.visible_cache is not None:
            reveal = ContextReveal(self.visible_cache.contexts, hp.context_reveal, hp.context_reveal_epochs, hp.seed)
        if train and self.device_augment is not None:  # augmented batch-wise after the transfer
            return PackedDataset(self.cache, self.indices[stage], PassThrough(), reveal)
        transform = make_pair_transform(
            hp.get("augment_backend", "opencv"),
            train=train and hp.augment,
            crop_size=hp.crop_size,
            flip=hp.flip,
            rotate_limit=hp.rotate_limit,
            seed=hp.seed,
        )
        return PackedDataset(self.cache, self.indices[stage], transform, reveal)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        if trainer.world_size > 1 and getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
            raise RuntimeError(
                "EmotionDataModule shards the data itself: set "
                "trainer.use_distributed_sampler=false (the trainer configs do)."
            )
        return trainer.global_rank, trainer.world_size

    def _loader(self, stage: str) -> DataLoader:
        hp, train = self.hparams, stage == "train"
        dataset = self.dataset(stage)
        rank, world = self._rank_world()
        sampler = EpochSampler(len(dataset), shuffle=train, seed=hp.seed, rank=rank, world_size=world, pad=train)
        # the training loader resumes mid-epoch (Lightning saves its position in checkpoints)
        loader = ResumableDataLoader if train else DataLoader
        return loader(
            dataset,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            sampler=sampler,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            drop_last=train and len(dataset) > hp.batch_size * world,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # -- augmentation on the device -----------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """augment_on='device': augment training batches on the device they were moved to."""
        trainer = self.trainer
        if self.device_augment is None or trainer is None or not trainer.training:
            return batch
        # the index of this batch in the epoch (restored on a resume): the batches readied before it
        batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return self.augment_batch(batch, trainer.current_epoch, batch_idx, trainer.global_rank)

    def augment_batch(self, batch, epoch: int = 0, batch_idx: int = 0, rank: int = 0):
        """A training batch (face, context 128×171, ...) with `device_augment` applied, seeded from
        (seed, epoch, batch_idx, rank); the other items pass through."""
        assert self.device_augment is not None, "augment_on='device' (and augment=True) only"
        gen = self.device_augment.generator_for(epoch, batch_idx, rank)
        face, context = self.device_augment(batch[0], batch[1], gen)
        out = [face, context, *batch[2:]]
        return tuple(out) if isinstance(batch, tuple) else out
