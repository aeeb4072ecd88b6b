"""Face crops and masked contexts: the two inputs of GLAMOR-Net, cut from one image and one box."""

from __future__ import annotations

import math

import cv2
import numpy as np

Box = tuple[float, float, float, float]

FACE_SIZE = 96  # face crop, square (box crop, no margin, aspect not kept)
CONTEXT_SIZE = (128, 171)  # (H, W) of the masked context before the 112x112 crop
CROP_SIZE = 112


def pixel_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box (x1, y1, x2, y2), end-exclusive, clipped to the image.

    Corners are taken in either order; a box with no pixel inside the image gives None.
    """
    x1, x2 = sorted((box[0], box[2]))
    y1, y2 = sorted((box[1], box[3]))
    ix1, iy1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    ix2, iy2 = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return ix1, iy1, ix2, iy2


def resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to exactly `size_hw`; area filter when shrinking."""
    h, w = size_hw
    shrinking = image.shape[0] >= h and image.shape[1] >= w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def face_crop(image: np.ndarray, box: Box | None, size: int = FACE_SIZE) -> np.ndarray:
    """The face input: the box cut out and resized to size×size; no box → the whole image."""
    pb = pixel_box(box, image.shape[1], image.shape[0]) if box is not None else None
    if pb is not None:
        x1, y1, x2, y2 = pb
        image = image[y1:y2, x1:x2]
    return resize(image, (size, size))


def masked_context(
    image: np.ndarray, box: Box | None, size_hw: tuple[int, int] = CONTEXT_SIZE, mask: bool = True
) -> np.ndarray:
    """The context input: the image with the face box set to zero (when `mask`), resized to size_hw."""
    pb = pixel_box(box, image.shape[1], image.shape[0]) if box is not None else None
    if mask and pb is not None:
        x1, y1, x2, y2 = pb
        image = image.copy()
        image[y1:y2, x1:x2] = 0
    return resize(image, size_hw)


def context_box(box: Box, width: int, height: int, size_hw: tuple[int, int] = CONTEXT_SIZE) -> Box:
    """Where the face box lands in the resized context (for tests and plots)."""
    sy, sx = size_hw[0] / height, size_hw[1] / width
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
