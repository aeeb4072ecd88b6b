"""Video throughput (`make bench BENCH_ARGS="--only video"`): frames/s of `glamor predict` on a video.

Two clips written here (MJPG AVI, 640×360, 25 frames/s): one person, and five people in a row (crops of
skimage's astronaut moving 2 pixels a frame, 10 frames out and back). Per clip, in frames per second of the video:
- detection: MTCNN on batches of 8 frames (`FaceDetector.detect`, as `VideoStream` runs it, with the bound
  `glamor predict` uses for videos: `predict.VIDEO_DETECT_MAX_SIDE`);
- classification: every face of 8 frames in one model batch, boxes known (`stream.classify_batch`),
  untrained weights of the chosen backbone (the cost does not depend on them);
- end to end: `VideoStream` over the file: decoding, detection, ByteTrack, classification, smoothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import Settings, log, make_module, measure

SIZE = (640, 360)
HEAD = 112
BATCH = 8


def clip_frames(n_faces: int, n_frames: int) -> list[np.ndarray]:
    """RGB frames with `n_faces` astronaut heads in a row on grey, moving right 2 pixels a frame (10 frames,
    then back to the start)."""
    from skimage.data import astronaut

    head = cv2.resize(astronaut()[10:266, 96:352], (HEAD, HEAD), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(n_frames):
        frame = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        for k in range(n_faces):
            x, y = 8 + k * (HEAD + 8) + 2 * (t % 10), 120  # back and forth within the frame
            frame[y : y + HEAD, x : x + HEAD] = head
        frames.append(frame)
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def run(s: Settings, backbone: str = "mobilenetv2") -> dict:
    from glamor_lightning.data.mtcnn import FaceDetector
    from glamor_lightning.predict import VIDEO_DETECT_MAX_SIDE, Predictor
    from glamor_lightning.video.stream import VideoStream, classify_batch

    n_frames = BATCH if s.quick else 4 * BATCH
    detector = FaceDetector(device=s.device, max_side=VIDEO_DETECT_MAX_SIDE)  # as `glamor predict` on videos
    predictor = Predictor(
        make_module(backbone, channels_last=False, device=s.device).eval(), s.device, detector=detector
    )
    out: dict = {
        "frame_size": list(SIZE),
        "batch_frames": BATCH,
        "frames": n_frames,
        "backbone": backbone,
        "detect_max_side": VIDEO_DETECT_MAX_SIDE,
        "clips": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n_faces in (1, 5):
            frames = clip_frames(n_faces, n_frames)
            path = write_clip(Path(tmp) / f"faces{n_faces}.avi", frames)
            batch = frames[:BATCH]
            boxes = [[d.box for d in dets] for dets in detector.detect(batch)]
            found = [len(b) for b in boxes]
            if min(found) != n_faces:
                log(f"warning: MTCNN found {found} faces per frame in the {n_faces}-face clip")
            clip = {
                "faces_found": found,
                "detect_fps": measure(lambda b=batch: detector.detect(b), len(batch), s),
                "classify_fps": measure(lambda b=batch, x=boxes: classify_batch(predictor, b, x), len(batch), s),
                "end_to_end_fps": measure(
                    lambda p=path: sum(1 for _ in VideoStream(predictor, p, batch_frames=BATCH)), n_frames, s
                ),
            }
            log(
                f"video {n_faces} face(s): detection {clip['detect_fps'].median:.1f} frames/s, classification "
                f"{clip['classify_fps'].median:.1f} frames/s, end to end {clip['end_to_end_fps'].median:.1f} frames/s"
            )
            out["clips"][str(n_faces)] = clip
    return out
