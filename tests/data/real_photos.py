"""Real photographs for the data tests (scikit-image's bundled pictures: no download).

The astronaut (Eileen Collins) is the face; coffee, rocket and the cat are backgrounds with no human
face. `scene()` pastes the astronaut's head, scaled and mirrored, onto a background at a known place,
so tests get many different real-face pictures from one portrait.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from skimage import data

HEAD = (150, 40, 300, 210)  # x1, y1, x2, y2 of the astronaut's head (hair included) in data.astronaut()


@functools.cache
def astronaut() -> np.ndarray:
    image = data.astronaut()
    image.setflags(write=False)
    return image


@functools.cache
def background(name: str, size: tuple[int, int]) -> np.ndarray:
    """A face-free photo resized to size (w, h)."""
    image = {"coffee": data.coffee, "rocket": data.rocket, "cat": data.chelsea}[name]()
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def scene(
    bg: str = "coffee",
    size: tuple[int, int] = (240, 160),
    head_px: int = 70,
    at: tuple[int, int] = (40, 30),
    mirror: bool = False,
) -> np.ndarray:
    """The astronaut's head, `head_px` pixels wide, pasted at `at` (x, y) onto a background photo."""
    x1, y1, x2, y2 = HEAD
    head = astronaut()[y1:y2, x1:x2]
    h = int(round(head_px * (y2 - y1) / (x2 - x1)))
    head = cv2.resize(head, (head_px, h), interpolation=cv2.INTER_AREA)
    if mirror:
        head = head[:, ::-1]
    canvas = background(bg, size).copy()
    x, y = at
    canvas[y : y + h, x : x + head_px] = head[: size[1] - y, : size[0] - x]
    return canvas


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB array as PNG or JPEG (by suffix), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), path
    return path


@functools.cache
def detector():
    """One MTCNN for the whole test session (its weights ship inside facenet-pytorch)."""
    from glamor_lightning.data.mtcnn import FaceDetector

    return FaceDetector("cpu")
