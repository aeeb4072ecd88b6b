"""facenet-pytorch MTCNN behind a small interface: all faces of a batch of RGB images, with scores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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


class FaceDetector:
    """MTCNN (weights ship inside facenet-pytorch: no download). `threshold` is the minimum
    confidence a face needs to be kept; `min_face_size` is in pixels."""

    def __init__(self, device: str | torch.device = "cpu", threshold: float = 0.9,
                 min_face_size: int = 20) -> None:
        from facenet_pytorch import MTCNN

        self.threshold = threshold
        self.device = torch.device(device)
        self.mtcnn = MTCNN(keep_all=True, device=self.device, min_face_size=min_face_size,
                           post_process=False, select_largest=False)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces per image, most confident first. Images of one size are run as one batch."""
        if not len(images):
            return []
        same_size = len({im.shape for im in images}) == 1
        groups = [list(images)] if same_size else [[im] for im in images]
        found: list[list[Detection]] = []
        for group in groups:
            with torch.no_grad():
                boxes, probs = self.mtcnn.detect(np.stack(group) if same_size else group[0][None])
            for b, p in zip(boxes, probs):
                found.append(self._keep(b, p))
        return found

    def _keep(self, boxes, probs) -> list[Detection]:
        if boxes is None or probs is None:
            return []
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)  # object arrays under numpy 2
        probs = np.asarray(probs, dtype=float).reshape(-1)
        dets = [Detection(tuple(map(float, b)), float(p)) for b, p in zip(boxes, probs)
                if np.isfinite(p) and p >= self.threshold]
        return sorted(dets, key=lambda d: -d.score)


def pick_face(detections: Sequence[Detection], policy: str = "confidence") -> Detection | None:
    """The one face an image keeps: the most confident or the largest."""
    if policy not in FACE_POLICIES:
        raise ValueError(f"face policy {policy!r}; expected one of {FACE_POLICIES}")
    if not detections:
        return None
    key = (lambda d: d.score) if policy == "confidence" else (lambda d: d.area)
    return max(detections, key=key)
