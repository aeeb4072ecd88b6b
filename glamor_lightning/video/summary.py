"""What a video's tracks add up to: per track its time span, frames seen, mean probabilities and dominant
emotion; for the clip, its dominant emotion and its main person.

- Mean probabilities are the mean of the raw per-frame probabilities (smoothing only steadies labels).
- A track's dominant emotion is its most frequent (smoothed) label over its sampled frames; its share is
  that label's fraction of the track's sampled frames (its share of the track's time at a constant
  sampling rate). Ties go to the class with the higher mean probability.
- The clip's dominant emotion is the most frequent label over every (frame, face) row: every face counts
  for the time it is seen. Ties as for a track.
- The main person (`main_track`) is the longest track: most frames seen; a tie goes to the higher mean
  MTCNN score, then to the smaller track id (the one confirmed first).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from glamor_lightning.video.stream import FrameResult


@dataclass
class TrackSummary:
    track_id: int
    classes: tuple[str, ...]
    first_time_s: float = float("inf")
    last_time_s: float = float("-inf")
    first_frame: int = -1
    last_frame: int = -1
    frames_seen: int = 0
    score_sum: float = 0.0
    prob_sum: np.ndarray | None = None
    labels: Counter = field(default_factory=Counter)

    def add(self, frame: FrameResult, face) -> None:
        if self.frames_seen == 0:
            self.first_time_s, self.first_frame = frame.time_s, frame.index
            self.prob_sum = np.zeros(len(self.classes))
        self.last_time_s, self.last_frame = frame.time_s, frame.index
        self.frames_seen += 1
        self.score_sum += face.score
        self.prob_sum += face.raw
        self.labels[face.label] += 1

    @property
    def mean_probabilities(self) -> np.ndarray:
        return self.prob_sum / max(1, self.frames_seen)

    @property
    def mean_score(self) -> float:
        return self.score_sum / max(1, self.frames_seen)

    @property
    def dominant(self) -> tuple[str, float]:
        """(label, share of the track's frames)."""
        label = dominant_label(self.labels, self.mean_probabilities, self.classes)
        return label, self.labels[label] / max(1, self.frames_seen)

    def to_dict(self) -> dict:
        label, share = self.dominant
        return {
            "track_id": self.track_id,
            "first_time_s": round(self.first_time_s, 4),
            "last_time_s": round(self.last_time_s, 4),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames_seen": self.frames_seen,
            "mean_score": round(self.mean_score, 6),
            "mean_probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, self.mean_probabilities)},
            "dominant_emotion": label,
            "dominant_share": round(share, 6),
        }


def dominant_label(counts: Counter, mean_probs: np.ndarray, classes: tuple[str, ...]) -> str:
    """The most frequent label; a tie goes to the class with the higher mean probability."""
    return max(counts, key=lambda c: (counts[c], float(mean_probs[classes.index(c)])))


class VideoSummary:
    """Accumulates `FrameResult`s into per-track and per-clip figures (see the module docstring)."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = tuple(classes)
        self.tracks: dict[int, TrackSummary] = {}
        self.frames = 0
        self.rows = 0
        self.last_time_s = 0.0
        self._labels: Counter = Counter()
        self._prob_sum = np.zeros(len(self.classes))

    def add(self, frame: FrameResult) -> None:
        self.frames += 1
        self.last_time_s = frame.time_s
        for face in frame.faces:
            self.tracks.setdefault(face.track_id, TrackSummary(face.track_id, self.classes)).add(frame, face)
            self._labels[face.label] += 1
            self._prob_sum += face.raw
            self.rows += 1

    @property
    def dominant(self) -> str | None:
        if not self.rows:
            return None
        return dominant_label(self._labels, self._prob_sum / self.rows, self.classes)

    def main_track(self) -> TrackSummary | None:
        """The longest track (ties: higher mean MTCNN score, then smaller id)."""
        if not self.tracks:
            return None
        return max(self.tracks.values(), key=lambda t: (t.frames_seen, t.mean_score, -t.track_id))

    def to_dict(self) -> dict:
        tracks = [t.to_dict() for t in sorted(self.tracks.values(), key=lambda t: t.track_id)]
        main = self.main_track()
        return {
            "frames_sampled": self.frames,
            "face_rows": self.rows,
            "tracks": tracks,
            "main_track": main.track_id if main else None,
            "dominant_emotion": self.dominant,
            "dominant_share": round(self._labels[self.dominant] / self.rows, 6) if self.rows else None,
        }
