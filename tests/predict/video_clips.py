"""Real test videos written with OpenCV: the astronaut's head (scikit-image, via tests/data/real_photos.py)
moved across real background photos, one or several people, leaving and coming back."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from real_photos import HEAD, astronaut, background  # noqa: E402

SIZE = (320, 240)  #: (width, height) of the test videos
HEAD_PX = 80  #: width of the pasted head in pixels (MTCNN finds it reliably)


def head(px: int = HEAD_PX, mirror: bool = False) -> np.ndarray:
    x1, y1, x2, y2 = HEAD
    crop = astronaut()[y1:y2, x1:x2]
    out = cv2.resize(crop, (px, int(round(px * (y2 - y1) / (x2 - x1)))), interpolation=cv2.INTER_AREA)
    return out[:, ::-1] if mirror else out


def canvas(heads_at: Sequence[tuple[int, int]], size: tuple[int, int] = SIZE, bg: str = "coffee") -> np.ndarray:
    """A background photo with one astronaut head (HEAD_PX wide) pasted at each (x, y); the second and
    later heads are mirrored, so two people do not look identical."""
    out = background(bg, size).copy()
    for k, (x, y) in enumerate(heads_at):
        h = head(mirror=k % 2 == 1)
        hh, ww = h.shape[:2]
        out[y : y + hh, x : x + ww] = h[: size[1] - y, : size[0] - x]
    return out


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    """RGB frames to a video file (MJPG in AVI by default: every OpenCV build writes and reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for rgb in frames:
        if writer is None:
            h, w = rgb.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
            assert writer.isOpened(), f"OpenCV cannot write {path}"
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert writer is not None, "no frames"
    writer.release()
    return path


def moving_face(n: int = 12, start: tuple[int, int] = (20, 40), step: tuple[int, int] = (8, 0), **kw) -> list:
    """One head moving `step` pixels per frame from `start`."""
    return [canvas([(start[0] + i * step[0], start[1] + i * step[1])], **kw) for i in range(n)]


def leaves_and_returns(before: int = 6, away: int = 6, after: int = 6, at: tuple[int, int] = (120, 40)) -> list:
    """A head at `at` for `before` frames, gone for `away` frames, back at the same place for `after`."""
    return [canvas([at])] * before + [canvas([])] * away + [canvas([at])] * after
