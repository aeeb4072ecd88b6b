"""Streaming video frames: one decoded frame at a time (never the whole video), sampled by stride, by a
rate or at given indices, with each frame's time from the container's timestamps.

- Times: `CAP_PROP_POS_MSEC` after decoding a frame (the container's presentation time, so variable
  frame rates are honoured); when the backend gives none (0 after the first frame, or going backwards),
  the frame's index divided by the announced frame rate.
- Skipped frames are only `grab()`bed (decoded by the backend, never converted to RGB).
- A file that OpenCV cannot open, or whose first frame does not decode, raises `BadVideoError` naming it.
- A video that stops decoding before its announced frame count and duration (a truncated file) ends the
  stream; `VideoFrames.stopped` then says at which frame and time it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from glamor_lightning.data.ncaer import DEFAULT_FPS, VIDEO_EXTENSIONS, BadVideoError


def is_video_name(name: str) -> bool:
    """Whether a file name has a video extension (`VIDEO_EXTENSIONS`); the content is checked on opening."""
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its index in the video, its time in seconds, the picture (HxWx3 uint8 RGB)."""

    index: int
    time_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class Sampling:
    """Which frames to take: every `stride`-th frame, or `fps` frames per second (by timestamp), or the
    frames at `indices`. Exactly one is set (`Sampling()` is every frame)."""

    stride: int | None = None
    fps: float | None = None
    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.stride, self.fps, self.indices)) > 1:
            raise ValueError("give one of stride, fps or indices, not several")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def describe(self) -> str:
        if self.fps is not None:
            return f"{self.fps:g} frames per second"
        if self.indices is not None:
            return f"{len(self.indices)} frames at given indices"
        return "every frame" if (self.stride or 1) == 1 else f"1 frame in {self.stride}"

    def sampled_rate(self, video_fps: float, frame_count: int = 0) -> float:
        """Frames per second of the sampled stream (the annotated video's rate; for `indices`, their mean
        rate over a video of `frame_count` frames)."""
        if self.fps is not None:
            return min(self.fps, video_fps)
        if self.indices is not None and frame_count > 0:
            return max(1e-3, min(video_fps, len(set(self.indices)) * video_fps / frame_count))
        return video_fps / (self.stride or 1)


class VideoFrames:
    """Iterate over the sampled frames of one video file (see the module docstring).

    Attributes after opening: width, height, fps (announced, `DEFAULT_FPS` when missing), frame_count
    (announced, 0 when unknown); after iterating: decoded (frames decoded), stopped (None, or a sentence
    saying where a truncated video stopped).
    """

    def __init__(self, path: str | os.PathLike, sampling: Sampling | None = None) -> None:
        self.path = Path(path)
        self.sampling = sampling or Sampling()
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise BadVideoError(f"{self.path}: empty or missing file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise BadVideoError(f"{self.path}: not a video OpenCV can open")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise BadVideoError(f"{self.path}: no frame could be decoded (not a video, or damaged)")
        self._first = first
        self._first_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        self.height, self.width = first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if np.isfinite(count) and count > 0 else 0
        self.decoded = 0
        self.stopped: str | None = None
        self._last_time = -1.0

    def expected_samples(self) -> int:
        """How many frames the sampling will take if the video is as long as it says (0 when unknown)."""
        n, s = self.frame_count, self.sampling
        if not n:
            return 0
        if s.indices is not None:
            return sum(1 for i in set(s.indices) if 0 <= i < n)
        if s.fps is not None:
            return int(np.ceil(n / self.fps * min(s.fps, self.fps)))
        return (n + (s.stride or 1) - 1) // (s.stride or 1)

    def _time(self, index: int, msec: float) -> float:
        """The frame's time: the container's timestamp, or index / fps where the backend has none."""
        t = msec / 1000.0 if np.isfinite(msec) else -1.0
        if (index > 0 and t <= 0) or t <= self._last_time:
            t = index / self.fps
        self._last_time = t
        return round(t, 6)

    def _wanted(self, index: int, time_s: float, next_time: list[float]) -> bool:
        s = self.sampling
        if s.indices is not None:
            return index in self._index_set
        if s.fps is not None:
            if time_s + 1e-6 >= next_time[0]:
                next_time[0] += 1.0 / s.fps
                while next_time[0] <= time_s:  # a gap in the timestamps: no burst of frames after it
                    next_time[0] += 1.0 / s.fps
                return True
            return False
        return index % (s.stride or 1) == 0

    def __iter__(self) -> Iterator[Frame]:
        self._index_set = set(self.sampling.indices or ())
        last_wanted = max(self._index_set) if self._index_set else None
        next_time = [0.0]
        index, bgr, msec = 0, self._first, self._first_ms
        try:
            while True:
                self.decoded = index + 1
                time_s = self._time(index, msec)
                if self._wanted(index, time_s, next_time):
                    if bgr is None:  # grabbed only: decode now
                        ok, bgr = self._cap.retrieve()
                        if not ok:
                            self._stop(index, time_s, "a frame could not be decoded")
                            return
                    yield Frame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if last_wanted is not None and index >= last_wanted:
                    return
                index += 1
                if not self._cap.grab():
                    if self._ended_early(index, time_s):
                        self._stop(index, time_s + 1.0 / self.fps, "the file ends or is damaged")
                    return
                bgr, msec = None, self._cap.get(cv2.CAP_PROP_POS_MSEC)
        finally:
            self._cap.release()

    def _ended_early(self, index: int, last_time_s: float) -> bool:
        """Whether decoding stopped before the end the container announces: fewer frames than its count
        *and* the last frame well before its duration (count / fps). Many containers estimate the count
        from the duration, so a variable-rate video yields fewer frames than announced but reaches the end."""
        if not self.frame_count or index >= self.frame_count:
            return False
        return last_time_s + 1.5 / self.fps < self.frame_count / self.fps

    def _stop(self, index: int, time_s: float, why: str) -> None:
        self.stopped = (
            f"stopped at frame {index} (about {time_s:.2f} s) of {self.frame_count} announced: {why}; "
            f"the {index} frames before it were read"
        )
