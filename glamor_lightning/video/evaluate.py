"""`glamor evaluate-videos`: clip-level accuracy on CAER (videos `CAER_ROOT/<split>/<Class>/*.avi`).

Per clip: sampled frames (`--frames-per-clip K`: the middle frame of each of K equal parts of the clip;
`--segment-seconds S`: the middle frame of each part of about S seconds, the partition `glamor prepare
ncaer` cuts), faces tracked as in `glamor predict`, the main person is the longest track (most frames;
ties: higher mean MTCNN score, then smaller track id: `VideoSummary.main_track`), and the clip's
probabilities are the mean of the main person's raw per-frame probabilities; its prediction their argmax.

Written into OUT: `predictions.csv` (the format `glamor compare` reads: path relative to CAER_ROOT, true,
predicted, prob_<Class>; clips with a face only), `frames.csv` (the main person's frames: path, frame,
time_s, track_id, true, predicted, prob_<Class>) and `summary.json`. Clip accuracy counts a clip with no
face (or no readable frame) as wrong; frame accuracy is over the main persons' frames.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glamor_lightning.analysis.predictions import per_class_accuracy, write_predictions
from glamor_lightning.data.ncaer import SPLIT_FOLDERS, BadVideoError, parts, probe, scan_videos
from glamor_lightning.video.reader import Sampling
from glamor_lightning.video.smoothing import Smoothing
from glamor_lightning.video.stream import VideoStream
from glamor_lightning.video.summary import VideoSummary


def clip_frames(n_frames: int, fps: float, frames_per_clip: int | None, segment_seconds: float | None) -> list[int]:
    """The frame indices evaluated in a clip of `n_frames`: the middle of each of `frames_per_clip` equal
    parts, or of each part of about `segment_seconds` (ncaer's `parts`)."""
    if (frames_per_clip is None) == (segment_seconds is None):
        raise ValueError("give one of frames_per_clip or segment_seconds")
    if frames_per_clip is not None:
        edges = np.linspace(0, n_frames, min(frames_per_clip, n_frames) + 1).round().astype(int)
        ranges = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    else:
        ranges = parts(n_frames, fps, segment_seconds)
    return sorted({(a + b - 1) // 2 for a, b in ranges})


@dataclass
class ClipResult:
    rel: str  #: path relative to CAER_ROOT
    true: str
    probs: np.ndarray | None = None  #: the main person's mean probabilities; None: no face
    frames: list[tuple[int, float, int, np.ndarray]] = field(default_factory=list)  #: (frame, time, track, raw)
    tracks: int = 0
    sampled: int = 0
    note: str | None = None  #: why there is no prediction, or where a truncated clip stopped


def evaluate_clip(predictor, path: Path, rel: str, true: str, indices_for, batch_frames: int = 8) -> ClipResult:
    """One clip: its main person's frames and mean probabilities (see the module docstring)."""
    result = ClipResult(rel, true)
    try:
        n, fps = probe(path)
        stream = VideoStream(
            predictor, path, Sampling(indices=tuple(indices_for(n, fps))), Smoothing("off"), batch_frames=batch_frames
        )
    except BadVideoError as err:
        result.note = f"unreadable: {err}"
        return result
    summary = VideoSummary(stream.classes)
    per_track: dict[int, list] = {}
    for frame in stream:
        summary.add(frame)
        for face in frame.faces:
            per_track.setdefault(face.track_id, []).append((frame.index, frame.time_s, face.track_id, face.raw))
    result.sampled, result.tracks = summary.frames, len(summary.tracks)
    main = summary.main_track()
    if main is None:
        result.note = f"no face in {summary.frames} sampled frames"
    else:
        result.frames = per_track[main.track_id]
        result.probs = np.mean([raw for *_, raw in result.frames], axis=0)
    if stream.frames.stopped:
        result.note = (result.note + "; " if result.note else "") + stream.frames.stopped
    return result


@dataclass
class VideoEvaluation:
    classes: tuple[str, ...]
    clips: list[ClipResult]

    @property
    def with_face(self) -> list[ClipResult]:
        return [c for c in self.clips if c.probs is not None]

    def predicted(self, clip: ClipResult) -> str | None:
        return None if clip.probs is None else self.classes[int(clip.probs.argmax())]

    @property
    def clip_accuracy(self) -> float:
        """Correct clips over all clips (no face: wrong)."""
        if not self.clips:
            return float("nan")
        return sum(self.predicted(c) == c.true for c in self.clips) / len(self.clips)

    @property
    def frame_accuracy(self) -> float:
        """Correct main-person frames (raw argmax) over all of them."""
        frames = [(c.true, self.classes[int(raw.argmax())]) for c in self.clips for *_, raw in c.frames]
        return sum(t == p for t, p in frames) / len(frames) if frames else float("nan")

    def per_class(self) -> list[dict]:
        return per_class_accuracy(
            [c.true for c in self.clips], [self.predicted(c) or "(no face)" for c in self.clips], self.classes
        )

    def write(self, out: Path) -> dict[str, Path]:
        out.mkdir(parents=True, exist_ok=True)
        clips = self.with_face
        preds = write_predictions(
            out / "predictions.csv",
            [c.rel for c in clips],
            [c.true for c in clips],
            [self.predicted(c) for c in clips],
            np.array([c.probs for c in clips]).reshape(len(clips), len(self.classes)),
            self.classes,
        )
        frames_path = out / "frames.csv"
        with frames_path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["path", "frame", "time_s", "track_id", "true", "predicted", *(f"prob_{k}" for k in self.classes)]
            )
            for c in clips:
                for index, t, track, raw in c.frames:
                    w.writerow(
                        [
                            c.rel,
                            index,
                            f"{t:.4f}",
                            track,
                            c.true,
                            self.classes[int(raw.argmax())],
                            *(f"{p:.6f}" for p in raw),
                        ]
                    )
        summary = out / "summary.json"
        summary.write_text(json.dumps(self.to_dict(), indent=2))
        return {"predictions": preds, "frames": frames_path, "summary": summary}

    def to_dict(self) -> dict:
        return {
            "clips": len(self.clips),
            "clips_with_face": len(self.with_face),
            "clip_accuracy": self.clip_accuracy,
            "frame_accuracy": self.frame_accuracy,
            "per_class": self.per_class(),
            "main_person": "longest track (most frames); ties: higher mean MTCNN score, then smaller track id",
            "notes": {c.rel: c.note for c in self.clips if c.note},
        }

    def text(self) -> str:
        n, k = len(self.clips), len(self.with_face)
        lines = [
            f"clip accuracy {self.clip_accuracy:.4f} over {n} clips ({n - k} without a face or unreadable, "
            f"counted wrong); frame accuracy {self.frame_accuracy:.4f} over "
            f"{sum(len(c.frames) for c in self.clips)} main-person frames",
            "per class (clips):",
        ]
        for row in self.per_class():
            lines.append(f"  {row['class']:<9} {row['correct']:>5}/{row['samples']:<5} {row['accuracy']:.4f}")
        notes = [(c.rel, c.note) for c in self.clips if c.note]
        if notes:
            lines.append(f"{len(notes)} clip(s) with a note:")
            lines += [f"  {rel}: {note}" for rel, note in notes[:10]] + (["  ..."] if len(notes) > 10 else [])
        return "\n".join(lines)


def evaluate_videos(
    predictor,
    root: str | os.PathLike,
    split: str = "test",
    frames_per_clip: int | None = None,
    segment_seconds: float | None = None,
    batch_frames: int = 8,
    progress: bool = True,
) -> VideoEvaluation:
    """Evaluate every clip of `split` (train, validation/val or test) of a CAER root."""
    root = Path(root)
    if split.lower() not in SPLIT_FOLDERS:
        raise ValueError(f"split {split!r}; expected one of {', '.join(SPLIT_FOLDERS)}")
    wanted = SPLIT_FOLDERS[split.lower()]
    videos = [v for v in scan_videos(root)[0] if v.split == wanted]
    if not videos:
        raise FileNotFoundError(f"no videos in the {split} split of {root}")
    if frames_per_clip is None and segment_seconds is None:
        frames_per_clip = 10

    def indices_for(n: int, fps: float) -> list[int]:
        return clip_frames(n, fps, frames_per_clip, segment_seconds)

    clips = [
        evaluate_clip(predictor, root / v.rel, v.rel, v.label, indices_for, batch_frames)
        for v in tqdm(videos, desc=f"clips ({split})", unit="clip", disable=not progress, dynamic_ncols=True)
    ]
    return VideoEvaluation(tuple(predictor.classes), clips)
