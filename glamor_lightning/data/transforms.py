"""Augmentation of the packed uint8 inputs, seeded per sample and epoch.

Training follows the authors: the face is flipped (p = 1/2) and rotated (uniform ±20°, bilinear, zero
fill), the context is only randomly cropped to 112×112; evaluation centre-crops the context and leaves
the face alone. Each sample's randomness is derived from (seed, epoch, index), so runs are
reproducible and resumable whatever the number of workers.

`PairTransform` (the default) does the flip and rotation as one OpenCV affine warp and the crop as a
slice: the same pixels albumentations gives for the same draws, at a fraction of its per-call cost
(which otherwise caps the packed cache at ~4× the per-image decode path; measured in `make bench`).
`AlbumentationsPairTransform` runs the same recipe through albumentations, and takes any extra
albumentations transforms for the face (`data.augment_backend=albumentations`).
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from glamor_lightning.data.geometry import CROP_SIZE

AUGMENT_BACKENDS = ("opencv", "albumentations")


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def flip_rotate_matrix(width: int, height: int, angle: float, flip: bool) -> np.ndarray:
    """2×3 affine matrix of a rotation by `angle` degrees about the centre ((W-1)/2, (H-1)/2),
    applied after an optional horizontal flip (albumentations' conventions)."""
    m = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    if flip:  # sample the mirrored image: input x -> (W-1) - x
        m[:, 2] += m[:, 0] * (width - 1)
        m[:, 0] *= -1
    return m


class PairTransform:
    """Transforms a (face, context) pair of HxWx3 uint8 arrays (OpenCV; see the module docstring)."""

    def __init__(
        self, train: bool, crop_size: int = CROP_SIZE, flip: bool = True, rotate_limit: float = 20.0, seed: int = 0
    ) -> None:
        self.train, self.crop_size, self.flip = train, crop_size, flip
        self.rotate_limit, self.seed = rotate_limit, seed

    def __call__(
        self, face: np.ndarray, context: np.ndarray, index: int, epoch: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.crop_size
        if not self.train:
            return face, center_crop(context, c)
        rng = np.random.default_rng([self.seed, epoch, index])
        flip = self.flip and bool(rng.random() < 0.5)
        angle = float(rng.uniform(-self.rotate_limit, self.rotate_limit)) if self.rotate_limit > 0 else 0.0
        top = int(rng.integers(0, context.shape[0] - c + 1))
        left = int(rng.integers(0, context.shape[1] - c + 1))
        if flip or angle:
            h, w = face.shape[:2]
            face = cv2.warpAffine(
                np.ascontiguousarray(face),
                flip_rotate_matrix(w, h, angle, flip),
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
        return face, context[top : top + c, left : left + c]


class AlbumentationsPairTransform:
    """The same recipe through albumentations, plus any `extra_face` transforms after the rotation."""

    def __init__(
        self,
        train: bool,
        crop_size: int = CROP_SIZE,
        flip: bool = True,
        rotate_limit: float = 20.0,
        seed: int = 0,
        extra_face: list[A.BasicTransform] | None = None,
    ) -> None:
        self.train, self.seed = train, seed
        face_ops: list[A.BasicTransform] = []
        if train and flip:
            face_ops.append(A.HorizontalFlip(p=0.5))
        if train and rotate_limit > 0:
            face_ops.append(A.Rotate(limit=rotate_limit, border_mode=0, fill=0, p=1.0))
        face_ops += list(extra_face or []) if train else []
        self.face = A.Compose(face_ops) if face_ops else None
        crop = A.RandomCrop if train else A.CenterCrop
        self.context = A.Compose([crop(crop_size, crop_size)])

    def __call__(
        self, face: np.ndarray, context: np.ndarray, index: int, epoch: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.train:
            seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
            self.context.set_random_seed(seed)
            if self.face is not None:
                self.face.set_random_seed(seed + 1)
        if self.face is not None:
            face = self.face(image=face)["image"]
        return face, self.context(image=context)["image"]


def make_pair_transform(backend: str = "opencv", **kwargs) -> PairTransform | AlbumentationsPairTransform:
    if backend not in AUGMENT_BACKENDS:
        raise ValueError(f"augment_backend={backend!r}; expected one of {AUGMENT_BACKENDS}")
    return PairTransform(**kwargs) if backend == "opencv" else AlbumentationsPairTransform(**kwargs)
