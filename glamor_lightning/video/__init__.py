"""Emotions in videos: every face tracked through a clip, each sampled frame read with its own context.

`reader` streams sampled frames, `tracking` links faces into tracks (supervision's ByteTrack),
`smoothing` steadies each track's probabilities, `stream` runs the pipeline, `summary` sums a video up,
`outputs` writes the files of `glamor predict`, `evaluate` scores clips of CAER. See docs/video.md.
"""

from glamor_lightning.video.reader import Frame, Sampling, VideoFrames, is_video_name
from glamor_lightning.video.smoothing import Smoothing, TrackSmoother
from glamor_lightning.video.stream import FrameResult, TrackedFace, VideoStream

__all__ = [
    "Frame",
    "FrameResult",
    "Sampling",
    "Smoothing",
    "TrackSmoother",
    "TrackedFace",
    "VideoFrames",
    "VideoStream",
    "is_video_name",
]
