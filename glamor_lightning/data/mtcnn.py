"""facenet-pytorch MTCNN behind a small interface: all faces of a batch of RGB images, with scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

FACE_POLICIES = ("confidence", "largest")


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2) in pixels of the image, detector confidence in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


#: MTCNN's first network (P-Net) looks at 12x12 windows: the pyramid scales the image by 12 / min_face_size down
PNET_WINDOW = 12.0


def has_pyramid(height: int, width: int, min_face_size: int) -> bool:
    """Whether MTCNN has any scale to search an image at.

    facenet-pytorch's pyramid starts at scale 12 / min_face_size and keeps a scale while the shorter side,
    scaled, is at least 12 pixels. An image whose shorter side is below `min_face_size` (or equal to it,
    for sizes such as 47 where `47 * (12 / 47)` rounds below 12) gets no scale at all, and facenet-pytorch
    then fails with `torch.cat(): expected a non-empty list`. Same arithmetic as facenet-pytorch's.
    """
    return min(height, width) * (PNET_WINDOW / min_face_size) >= PNET_WINDOW


class FaceDetector:
    """MTCNN (weights ship inside facenet-pytorch: no download). `threshold` is the minimum
    confidence a face needs to be kept, in (0, 1]; `min_face_size` is in pixels (≥ 1). An image too
    small to hold a face of that size (see `has_pyramid`) has no face."""

    def __init__(self, device: str | torch.device = "cpu", threshold: float = 0.9, min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

        if not 0.0 < threshold <= 1.0:  # also refuses NaN
            raise ValueError(f"MTCNN threshold must be in (0, 1], got {threshold}")
        if min_face_size < 1:
            raise ValueError(f"MTCNN min_face_size must be at least 1 pixel, got {min_face_size}")
        self.threshold = threshold
        self.min_face_size = min_face_size
        self.device = torch.device(device)
        self.mtcnn = MTCNN(
            keep_all=True, device=self.device, min_face_size=min_face_size, post_process=False, select_largest=False
        )

    def searchable(self, image: np.ndarray) -> bool:
        """Whether the image is large enough for a face of `min_face_size` pixels (see `has_pyramid`)."""
        return has_pyramid(image.shape[0], image.shape[1], self.min_face_size)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces per image, most confident first. Images of one size are run as one batch; an image
        smaller than `min_face_size` is not run (it has no face)."""
        found: list[list[Detection]] = [[] for _ in images]
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            if self.searchable(image):
                by_shape.setdefault(image.shape, []).append(i)
        for positions in by_shape.values():
            with torch.no_grad():
                boxes, probs = self.mtcnn.detect(np.stack([images[i] for i in positions]))
            for i, b, p in zip(positions, boxes, probs):
                found[i] = self._keep(b, p)
        return found

    def _keep(self, boxes, probs) -> list[Detection]:
        if boxes is None or probs is None:
            return []
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)  # object arrays under numpy 2
        probs = np.asarray(probs, dtype=float).reshape(-1)
        dets = [
            Detection(tuple(map(float, b)), float(p))
            for b, p in zip(boxes, probs)
            if np.isfinite(p) and p >= self.threshold
        ]
        return sorted(dets, key=lambda d: -d.score)


def pick_face(detections: Sequence[Detection], policy: str = "confidence") -> Detection | None:
    """The one face an image keeps: the most confident or the largest."""
    if policy not in FACE_POLICIES:
        raise ValueError(f"face policy {policy!r}; expected one of {FACE_POLICIES}")
    if not detections:
        return None
    key = (lambda d: d.score) if policy == "confidence" else (lambda d: d.area)
    return max(detections, key=key)
