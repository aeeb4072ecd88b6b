"""Each track's class probabilities smoothed over its sampled frames, so a label does not flicker.

- `ema:A` (exponential moving average): s_1 = p_1, s_t = A * p_t + (1 - A) * s_{t-1}; A in (0, 1],
  A = 1 is no smoothing.
- `window:N`: the mean of the track's last N sampled frames (fewer at its start).
- `off`: the raw per-frame probabilities.

Steps count a track's own frames: a frame where the track is not seen does not move its average.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Smoothing:
    """How probabilities are smoothed: kind `ema` (with `alpha`), `window` (with `size`) or `off`."""

    kind: str = "ema"
    alpha: float = 0.5
    size: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ("ema", "window", "off"):
            raise ValueError(f"smoothing {self.kind!r}: expected ema:ALPHA, window:N or off")
        if self.kind == "ema" and not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"ema smoothing needs 0 < alpha <= 1, got {self.alpha}")
        if self.kind == "window" and self.size < 1:
            raise ValueError(f"window smoothing needs a size of at least 1 frame, got {self.size}")

    @property
    def on(self) -> bool:
        return self.kind != "off"

    @classmethod
    def parse(cls, text: str) -> Smoothing:
        """`off`, `ema`, `ema:0.3`, `window` or `window:7`."""
        kind, _, value = text.strip().lower().partition(":")
        try:
            if kind == "ema":
                return cls("ema", alpha=float(value) if value else 0.5)
            if kind == "window":
                return cls("window", size=int(value) if value else 5)
        except ValueError:
            raise ValueError(f"smoothing {text!r}: expected ema:ALPHA (0 < ALPHA <= 1), window:N or off") from None
        return cls(kind)

    def describe(self) -> str:
        return {"ema": f"ema:{self.alpha:g}", "window": f"window:{self.size}", "off": "off"}[self.kind]


class TrackSmoother:
    """The smoothed probabilities of every track, updated one observation at a time."""

    def __init__(self, smoothing: Smoothing) -> None:
        self.smoothing = smoothing
        self._ema: dict[int, np.ndarray] = {}
        self._windows: dict[int, deque] = {}

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        """The track's smoothed probabilities after seeing `probs` (a copy of `probs` when off)."""
        probs = np.asarray(probs, dtype=np.float64)
        s = self.smoothing
        if s.kind == "ema":
            prev = self._ema.get(track_id)
            out = probs.copy() if prev is None else s.alpha * probs + (1.0 - s.alpha) * prev
            self._ema[track_id] = out
            return out.copy()
        if s.kind == "window":
            window = self._windows.setdefault(track_id, deque(maxlen=s.size))
            window.append(probs)
            return np.mean(window, axis=0)
        return probs.copy()
