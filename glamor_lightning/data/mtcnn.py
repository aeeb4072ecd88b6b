"""facenet-pytorch MTCNN behind a small interface: all faces of a batch of RGB images, with scores."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
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


def check_max_side(max_side: int | None, min_face_size: int) -> None:
    """A ValueError for a bound no face of `min_face_size` fits in (None: full resolution, always fine)."""
    if max_side is not None and max_side < max(min_face_size, PNET_WINDOW):
        raise ValueError(
            f"MTCNN max_side must be at least min_face_size ({min_face_size}) and {int(PNET_WINDOW)} pixels, "
            f"got {max_side} (None searches at full resolution)"
        )


def bounded_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) MTCNN searches an image of this size at: the size itself when `max_side` is None
    or the longest side is at most `max_side`, else scaled (aspect kept) so the longest side is `max_side`."""
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def channels_last(mtcnn) -> None:
    """Put MTCNN's three networks in channels-last memory format, in place.

    facenet-pytorch hands P-Net the image pyramid in NCHW, where CPU convolutions and P-Net's 2×2 max-pool
    take a slow path: on this project's 2-core CPUs P-Net's pool alone was 35 % of a 640×360 frame's
    detection time. With channels-last weights every convolution's output, and so every pool, is
    channels-last, and a frame's detection took 0.6× the time, with the same boxes (to 1e-4 px) and scores.
    """
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        net.to(memory_format=torch.channels_last)


class FaceDetector:
    """MTCNN (weights ship inside facenet-pytorch: no download). `threshold` is the minimum
    confidence a face needs to be kept, in (0, 1]; `min_face_size` is in pixels (≥ 1) of the image
    MTCNN searches. An image too small to hold a face of that size (see `has_pyramid`) has no face.

    `max_side` bounds the cost of a search: MTCNN's P-Net pyramid starts at 12 / min_face_size of the
    image, so its cost grows with the image's pixels. When set, an image whose longest side exceeds it is
    searched as a copy shrunk (cv2.INTER_AREA, aspect kept) to a longest side of `max_side`, and the boxes
    are mapped back to the original's pixels; smaller images are searched as they are. `min_face_size`
    stays in the searched copy's pixels, so in a larger original the smallest face found grows by the
    downscale ratio (`smallest_face`): with `max_side` 640 and `min_face_size` 20, a 1920-pixel-wide
    photo's smallest face is 60 pixels. `glamor prepare detect` runs without a bound (full resolution)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        threshold: float = 0.9,
        min_face_size: int = 20,
        max_side: int | None = None,
    ) -> None:
        """`max_side`: the longest side, in pixels, MTCNN searches an image at (None: every image at
        full resolution). At least `min_face_size` and 12 (P-Net's window). Larger images are shrunk
        for the search, which is faster but misses faces smaller than `smallest_face` of the original."""
        from facenet_pytorch import MTCNN

        if not 0.0 < threshold <= 1.0:  # also refuses NaN
            raise ValueError(f"MTCNN threshold must be in (0, 1], got {threshold}")
        if min_face_size < 1:
            raise ValueError(f"MTCNN min_face_size must be at least 1 pixel, got {min_face_size}")
        check_max_side(max_side, min_face_size)
        self.threshold = threshold
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.device = torch.device(device)
        self.mtcnn = MTCNN(
            keep_all=True, device=self.device, min_face_size=min_face_size, post_process=False, select_largest=False
        )
        if self.device.type == "cpu":
            channels_last(self.mtcnn)

    def bounded(self, max_side: int | None) -> FaceDetector:
        """This detector (the same MTCNN, threshold and min_face_size) searching at another `max_side`."""
        check_max_side(max_side, self.min_face_size)
        other = copy.copy(self)
        other.max_side = max_side
        return other

    def searched_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) MTCNN searches an image of this size at (see `max_side`)."""
        return bounded_size(height, width, self.max_side)

    def smallest_face(self, height: int, width: int) -> float:
        """The smallest face, in pixels of an image of this size, MTCNN looks for in it: `min_face_size`,
        grown by the downscale ratio when the image is shrunk for the search (see `max_side`)."""
        return self.min_face_size * max(height, width) / max(self.searched_size(height, width))

    def searchable(self, image: np.ndarray) -> bool:
        """Whether the image, at the size it is searched at, is large enough for a face of
        `min_face_size` pixels (see `has_pyramid`)."""
        return has_pyramid(*self.searched_size(image.shape[0], image.shape[1]), self.min_face_size)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces per image, most confident first, boxes in the image's own pixels. Images searched at
        one size (see `max_side`) are run as one batch; an image too small for `min_face_size` is not
        run (it has no face)."""
        found: list[list[Detection]] = [[] for _ in images]
        searched = [self._searched(image) for image in images]
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(searched):
            if has_pyramid(image.shape[0], image.shape[1], self.min_face_size):
                by_shape.setdefault(image.shape, []).append(i)
        for positions in by_shape.values():
            with torch.no_grad():
                boxes, probs = self.mtcnn.detect(np.stack([searched[i] for i in positions]))
            for i, b, p in zip(positions, boxes, probs):
                (h, w), (sh, sw) = images[i].shape[:2], searched[i].shape[:2]
                found[i] = self._keep(b, p, scale=(w / sw, h / sh))
        return found

    def _searched(self, image: np.ndarray) -> np.ndarray:
        """The image itself, or its copy shrunk to `max_side` (cv2.INTER_AREA)."""
        h, w = image.shape[:2]
        sh, sw = self.searched_size(h, w)
        if (sh, sw) == (h, w):
            return image
        return cv2.resize(np.ascontiguousarray(image), (sw, sh), interpolation=cv2.INTER_AREA)

    def _keep(self, boxes, probs, scale: tuple[float, float] = (1.0, 1.0)) -> list[Detection]:
        """The faces of at least `threshold`, boxes scaled by (x, y) `scale` back to the original's pixels."""
        if boxes is None or probs is None:
            return []
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)  # object arrays under numpy 2
        if scale != (1.0, 1.0):
            boxes = boxes * np.array([scale[0], scale[1], scale[0], scale[1]])
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
