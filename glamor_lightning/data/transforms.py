"""Augmentation of the packed uint8 inputs (albumentations), seeded per sample and epoch.

Training follows the authors: the face is flipped and rotated (±20°), the context is only randomly
cropped to 112×112; evaluation centre-crops the context and leaves the face alone. Each sample's
randomness is derived from (seed, epoch, index), so runs are reproducible and resumable whatever the
number of workers.
"""
from __future__ import annotations

import albumentations as A
import numpy as np

from glamor_lightning.data.geometry import CROP_SIZE


class PairTransform:
    """Transforms a (face, context) pair of HxWx3 uint8 arrays."""

    def __init__(self, train: bool, crop_size: int = CROP_SIZE, flip: bool = True,
                 rotate_limit: float = 20.0, seed: int = 0) -> None:
        self.train, self.seed = train, seed
        face_ops: list[A.BasicTransform] = []
        if train and flip:
            face_ops.append(A.HorizontalFlip(p=0.5))
        if train and rotate_limit > 0:
            face_ops.append(A.Rotate(limit=rotate_limit, border_mode=0, fill=0, p=1.0))
        self.face = A.Compose(face_ops) if face_ops else None
        crop = A.RandomCrop if train else A.CenterCrop
        self.context = A.Compose([crop(crop_size, crop_size)])

    def __call__(self, face: np.ndarray, context: np.ndarray, index: int,
                 epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        if self.train:
            seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
            self.context.set_random_seed(seed)
            if self.face is not None:
                self.face.set_random_seed(seed + 1)
        if self.face is not None:
            face = self.face(image=face)["image"]
        return face, self.context(image=context)["image"]
