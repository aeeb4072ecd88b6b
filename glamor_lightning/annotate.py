"""The annotated photo of `glamor predict`: each face's box and a numbered label, `#1 Happy 0.93`.

Faces are numbered from 1 in the order they are given: `predict` gives them most confident first, and
the number on the image is the face's `number` in the JSON (`faces[number - 1]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

_COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
]


class Labelled(Protocol):
    """What `annotate` needs of a prediction (a `FacePrediction`)."""

    box: tuple[float, float, float, float]
    label: str
    probability: float


def face_label(number: int, prediction: Labelled) -> str:
    """The text drawn over face `number` (from 1): `#1 Happy 0.93`."""
    return f"#{number} {prediction.label} {prediction.probability:.2f}"


def annotate(image: np.ndarray, predictions: Sequence[Labelled]) -> np.ndarray:
    """A copy of the RGB image with each face's box and `face_label` drawn (numbered from 1 in the
    given order)."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 700.0)
    thick = max(1, int(round(2 * scale)))
    for i, p in enumerate(predictions):
        colour = _COLOURS[i % len(_COLOURS)]
        x1, y1, x2, y2 = (int(round(v)) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = face_label(i + 1, p)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base), colour, -1)
        cv2.putText(out, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
