"""The video pipeline: sampled frames → MTCNN (a batch of frames at once) → ByteTrack (frame by frame)
→ the model (every tracked face of the batch of frames in one forward pass, each face with its own masked
context, as for photos) → per-track smoothing. `VideoStream` yields one `FrameResult` per sampled frame
and holds at most `batch_frames` frames at any time, so memory does not grow with the video's length.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from glamor_lightning.video.reader import Frame, Sampling, VideoFrames
from glamor_lightning.video.smoothing import Smoothing, TrackSmoother
from glamor_lightning.video.tracking import FaceTracker

Box = tuple[float, float, float, float]


@dataclass
class TrackedFace:
    """One face on one frame: its track, box (pixels), MTCNN score, and class probabilities, smoothed
    over the track (`probs`; the same as `raw` when smoothing is off) and of this frame alone (`raw`)."""

    track_id: int
    box: Box
    score: float
    probs: np.ndarray
    raw: np.ndarray
    classes: tuple[str, ...] = field(repr=False)

    @property
    def label(self) -> str:
        return self.classes[int(self.probs.argmax())]

    @property
    def probability(self) -> float:
        return float(self.probs.max())

    @property
    def raw_label(self) -> str:
        return self.classes[int(self.raw.argmax())]


@dataclass
class FrameResult:
    """A sampled frame (index, time, the RGB picture) and its tracked faces, by track id."""

    index: int
    time_s: float
    rgb: np.ndarray = field(repr=False)
    faces: list[TrackedFace]


class VideoStream:
    """Iterate over the `FrameResult`s of one video (see the module docstring).

    Args:
        predictor: a `glamor_lightning.predict.Predictor` (its video detector, model and data contract).
        path: the video file; a file that is no readable video raises `BadVideoError` here.
        sampling: which frames (default every frame).
        smoothing: per-track smoothing (default `ema:0.5`).
        memory_s: how long a face may be away and keep its track id (`FaceTracker`).
        batch_frames: sampled frames detected and classified together.
    """

    def __init__(
        self,
        predictor,
        path: str | os.PathLike,
        sampling: Sampling | None = None,
        smoothing: Smoothing | None = None,
        memory_s: float = 2.0,
        batch_frames: int = 8,
    ) -> None:
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
        self.predictor = predictor
        self.frames = VideoFrames(path, sampling)
        self.sampling = self.frames.sampling
        self.smoothing = smoothing or Smoothing()
        self.rate = self.sampling.sampled_rate(self.frames.fps, self.frames.frame_count)
        self.tracker = FaceTracker(self.rate, memory_s=memory_s)
        self.smoother = TrackSmoother(self.smoothing)
        self.batch_frames = batch_frames
        self.classes = tuple(predictor.classes)
        self.detect_seconds = 0.0  #: time spent in MTCNN
        self.classify_seconds = 0.0  #: time spent building model inputs and in the model

    def __iter__(self) -> Iterator[FrameResult]:
        frames = iter(self.frames)
        while chunk := list(itertools.islice(frames, self.batch_frames)):
            yield from self._process(chunk)

    def _process(self, chunk: list[Frame]) -> list[FrameResult]:
        started = time.perf_counter()
        detections = self.predictor.video_detector.detect([f.rgb for f in chunk])
        self.detect_seconds += time.perf_counter() - started
        tracked = []  # per frame: [(detection, track id)]
        for dets in detections:
            tracked.append([(dets[pos], track_id) for pos, track_id in self.tracker.update(dets)])
        started = time.perf_counter()
        raw = classify_batch(self.predictor, [f.rgb for f in chunk], [[d.box for d, _ in faces] for faces in tracked])
        self.classify_seconds += time.perf_counter() - started
        results, k = [], 0
        for frame, faces in zip(chunk, tracked):
            out = []
            for det, track_id in faces:
                smoothed = self.smoother.update(track_id, raw[k])
                out.append(TrackedFace(track_id, det.box, det.score, smoothed, raw[k].astype(np.float64), self.classes))
                k += 1
            results.append(FrameResult(frame.index, frame.time_s, frame.rgb, sorted(out, key=lambda f: f.track_id)))
        return results


@torch.no_grad()
def classify_batch(predictor, images: list[np.ndarray], boxes: list[list[Box]]) -> np.ndarray:
    """Softmax probabilities [faces, classes] of the faces `boxes[i]` of each image `images[i]` (in that
    order), in one model batch: each face's crop and its own masked context (`Predictor.model_inputs`)."""
    inputs = [predictor.model_inputs(image, b) for image, b in zip(images, boxes) if b]
    if not inputs:
        return np.zeros((0, len(predictor.classes)))
    faces = torch.cat([f for f, _ in inputs])
    contexts = torch.cat([c for _, c in inputs])
    return predictor.forward(faces, contexts).logits.float().softmax(1).cpu().numpy()
