"""Face tracks through a video: supervision's ByteTrack links each sampled frame's MTCNN boxes to tracks.

Why ByteTrack from `supervision` (pinned to 0.30.x in pyproject.toml): it is maintained, pure Python over
numpy/scipy, and 0.30 no longer depends on `opencv-python` (which would install a second OpenCV over our
`opencv-python-headless`). `norfair` pins numpy < 2 and Roboflow's `trackers` (ByteTrack's new home)
depends on `opencv-python`; supervision deprecated its ByteTrack in 0.28 (removed in 0.31) in favour of
`trackers`, so this module is the one place to change when moving there.

Policy (docs/video.md): a track is matched by the overlap (IoU) of its Kalman-predicted box with the new
boxes. A face that disappears keeps its id while it is away for at most `memory_s` seconds and comes back
near where the track predicts it; after longer (or elsewhere) it gets a new id. A new face appearing after
the first sampled frame is confirmed, and reported, from its second consecutive sampled frame on (a lone
one-frame detection, often a false positive, is never reported). Ids count from 1 in order of confirmation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from glamor_lightning.data.mtcnn import Detection


class FaceTracker:
    """ByteTrack over sampled frames arriving at `rate` frames per second.

    Args:
        rate: sampled frames per second (the stream the tracker sees).
        memory_s: how long, in seconds, a face may be away and come back with its id.
        match_threshold: ByteTrack's matching cost threshold (1 - IoU, fused with the score); 0.8 is its default.
    """

    def __init__(self, rate: float, memory_s: float = 2.0, match_threshold: float = 0.8) -> None:
        if not rate > 0:
            raise ValueError(f"the sampled frame rate must be positive, got {rate}")
        if memory_s < 0:
            raise ValueError(f"track memory must be 0 s or more, got {memory_s}")
        with warnings.catch_warnings():  # its deprecation notice: see the module docstring
            warnings.simplefilter("ignore", FutureWarning)
            import supervision as sv

            # ByteTrack keeps a lost track for int(frame_rate / 30 * lost_track_buffer) frames
            self._tracker = sv.ByteTrack(
                track_activation_threshold=0.25,
                lost_track_buffer=max(0, int(round(memory_s * rate))),
                minimum_matching_threshold=match_threshold,
                frame_rate=30,
                minimum_consecutive_frames=1,
            )
        self._sv = sv
        self.rate, self.memory_s = rate, memory_s

    def update(self, detections: Sequence[Detection]) -> list[tuple[int, int]]:
        """Feed one sampled frame's detections (every frame, also those with none: time goes on).
        Returns (position in `detections`, track id) of the detections on a confirmed track."""
        if detections:
            xyxy = np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4)
            scores = np.array([d.score for d in detections], dtype=np.float32)
        else:
            xyxy, scores = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        found = self._sv.Detections(xyxy=xyxy, confidence=scores, data={"position": np.arange(len(xyxy))})
        tracked = self._tracker.update_with_detections(found)
        if not len(tracked):
            return []
        return sorted((int(p), int(t)) for p, t in zip(tracked.data["position"], tracked.tracker_id) if int(t) >= 0)
