"""Batch augmentation of uint8 NHWC (face, context) batches in torch, on whatever device they are on.

The same augmentation as `transforms.PairTransform` in training, in distribution: the face is flipped
horizontally with probability 1/2 and rotated by an angle drawn uniformly from ±`rotate_limit`
degrees about its centre (bilinear, zero fill, same size: flip and rotation are one
`grid_sample`); the context (the full 128×171 masked context) is cropped to
`crop_size`×`crop_size` at a uniformly drawn integer offset. Evaluation does not use this (its
context is centre-cropped on the CPU).

It exists for the GPU: there the CPU's per-sample albumentations path cannot keep up with the model,
so the loader hands over un-augmented uint8 arrays (4× smaller than float) and the whole batch is
augmented on the GPU in a few kernels (`EmotionDataModule(augment_on="device")`). It runs on the CPU
as well (one batched call instead of B per-sample ones).

Randomness: the per-sample parameters (flip, angle, crop offset: 4 numbers per sample) are drawn on
the CPU from a `torch.Generator`, then moved to the batch's device, so a seed gives the same
parameters on every device. `generator_for(epoch, batch, rank)` derives a batch's generator from
(seed, epoch, batch index, rank), so a run is reproducible and a resumed run draws what the
uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glamor_lightning.data.geometry import CROP_SIZE


@dataclass
class AugmentParams:
    """Per-sample parameters of one batch (CPU tensors)."""

    flip: torch.Tensor  #: [B] bool, flip the face horizontally (before rotating it)
    angle: torch.Tensor  #: [B] float32, face rotation in degrees (positive: counter-clockwise, as cv2)
    top: torch.Tensor  #: [B] int64, context crop row offset
    left: torch.Tensor  #: [B] int64, context crop column offset


def flip_rotate(images: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip (where `flip`) then rotate by `angle` degrees a uint8 NHWC batch, about each image's
    centre, bilinear with zero fill; uint8 NHWC out, same size.

    Rotation as cv2 / albumentations `Rotate`: positive angles turn the content counter-clockwise on
    screen; centre at ((W-1)/2, (H-1)/2) in pixel indices (align_corners=False).
    """
    n, h, w, _ = images.shape
    if n == 0:
        return images
    device = images.device
    a = torch.deg2rad(angle.to(device=device, dtype=torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    sx = torch.where(flip.to(device), -1.0, 1.0)
    # output pixel p -> input pixel F·R·p in normalised coordinates (aspect-corrected for H != W);
    # R turns the content counter-clockwise on screen (y down) by `angle`, F mirrors x
    a00, a01 = (sx * cos)[:, None, None], (-sx * sin * (h / w))[:, None, None]
    a10, a11 = (sin * (w / h))[:, None, None], cos[:, None, None]
    # the sign of `sin`: cv2.getRotationMatrix2D(angle) maps output to input pixels by [[c, -s], [s, c]]
    # in (x, y) with y down, a counter-clockwise turn of the content on screen. The grid is what
    # F.affine_grid(theta, align_corners=False) makes, by broadcasting (a third of its CPU time).
    xs = ((torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1)[None, None, :]
    ys = ((torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1)[None, :, None]
    grid = torch.stack((a00 * xs + a01 * ys, a10 * xs + a11 * ys), dim=-1)  # [B, H, W, 2]
    x = images.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample size×size crops of a NHWC batch at offsets (top, left) (CPU tensors or lists).

    The crops are views; one `torch.stack` copies them on the batch's device (a single kernel on a
    GPU, and 20× faster than an advanced-indexing gather on a CPU).
    """
    tops, lefts = _ints(top), _ints(left)
    if not tops:
        return images[:, :size, :size].clone()
    return torch.stack([images[i, t : t + size, x : x + size] for i, (t, x) in enumerate(zip(tops, lefts))])


def _ints(v: torch.Tensor | list[int]) -> list[int]:
    return v.tolist() if isinstance(v, torch.Tensor) else [int(x) for x in v]


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre size×size crop of a NHWC batch (offsets as albumentations' CenterCrop)."""
    h, w = images.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top : top + size, left : left + size]


class DeviceAugment:
    """Training augmentation of whole uint8 NHWC batches (see the module doc).

    Args:
        crop_size: side of the square context crop.
        flip: random horizontal flip of the face (p = 0.5).
        rotate_limit: face rotation range in degrees, uniform in [-limit, limit]; 0 = none.
        seed: base seed of `generator_for`.
    """

    def __init__(
        self, crop_size: int = CROP_SIZE, flip: bool = True, rotate_limit: float = 20.0, seed: int = 0
    ) -> None:
        self.crop_size, self.flip, self.rotate_limit, self.seed = crop_size, flip, float(rotate_limit), seed

    def generator_for(self, epoch: int = 0, batch: int = 0, rank: int = 0) -> torch.Generator:
        """A CPU generator for one batch, derived from (seed, epoch, batch index, rank)."""
        state = np.random.SeedSequence([self.seed, epoch, batch, rank]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def sample(self, n: int, context_hw: tuple[int, int], generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the parameters of n samples on the CPU."""
        h, w = context_hw
        if h < self.crop_size or w < self.crop_size:
            raise ValueError(f"context {h}x{w} is smaller than the {self.crop_size}x{self.crop_size} crop")
        flip = torch.rand(n, generator=generator) < 0.5
        angle = (torch.rand(n, generator=generator) * 2 - 1) * self.rotate_limit
        top = torch.randint(0, h - self.crop_size + 1, (n,), generator=generator)
        left = torch.randint(0, w - self.crop_size + 1, (n,), generator=generator)
        if not self.flip:
            flip = torch.zeros_like(flip)
        return AugmentParams(flip=flip, angle=angle.float(), top=top, left=left)

    def apply(
        self, face: torch.Tensor, context: torch.Tensor, params: AugmentParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment with given parameters; uint8 NHWC in and out, on the inputs' device."""
        _check(face, "face")
        _check(context, "context")
        if self.rotate_limit > 0:
            face = flip_rotate(face, params.angle, params.flip)
        elif self.flip:  # a flip alone is exact: no resampling
            face = torch.where(params.flip.to(face.device)[:, None, None, None], face.flip(2), face)
        return face, crop(context, params.top, params.left, self.crop_size)

    def __call__(
        self, face: torch.Tensor, context: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch: face [B, S, S, 3] and context [B, H, W, 3] uint8 → face [B, S, S, 3],
        context [B, crop, crop, 3] uint8. `generator` None draws from torch's global generator."""
        params = self.sample(face.shape[0], tuple(context.shape[1:3]), generator)
        return self.apply(face, context, params)

    def __repr__(self) -> str:
        return (
            f"DeviceAugment(crop_size={self.crop_size}, flip={self.flip}, "
            f"rotate_limit={self.rotate_limit}, seed={self.seed})"
        )


class PassThrough:
    """The per-sample transform of the training split when augmentation happens on the device:
    the face and the full context as they are in the cache."""

    def __call__(
        self, face: np.ndarray, context: np.ndarray, index: int, epoch: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        return face, context


def _check(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected a uint8 NHWC batch [B, H, W, 3], got {x.dtype} {tuple(x.shape)}")


__all__ = ["AugmentParams", "DeviceAugment", "PassThrough", "center_crop", "crop", "flip_rotate"]
