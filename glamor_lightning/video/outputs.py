"""The files `glamor predict` writes per video, while the video streams through (nothing is held):

- `<name>.csv`: one row per (sampled frame, tracked face), columns `CSV_COLUMNS` + `prob_<Class>` per
  class (smoothed when smoothing is on), + `raw_label`, `raw_probability`, `raw_prob_<Class>` when it is on;
- `<name>.json`: the video, the settings, per-track summaries and the clip's dominant emotion
  (`glamor_lightning.video.summary`), `message` "no face ..." when no face was tracked, `stopped` when
  the video ended early (truncated), `error` for a file that is no readable video;
- `<name>_annotated.mp4` (mp4v; `.avi` with MJPG where OpenCV cannot write mp4): the sampled frames with
  each face's box, track id and smoothed label, at the sampled frame rate.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from glamor_lightning.data.ncaer import BadVideoError
from glamor_lightning.video.reader import Sampling
from glamor_lightning.video.smoothing import Smoothing
from glamor_lightning.video.stream import FrameResult, VideoStream
from glamor_lightning.video.summary import VideoSummary

CSV_COLUMNS = ("frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "score", "label", "probability")
#: a track's colour on the annotated video (RGB), by track id
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def csv_header(classes: tuple[str, ...], smoothed: bool) -> list[str]:
    header = [*CSV_COLUMNS, *(f"prob_{c}" for c in classes)]
    if smoothed:
        header += ["raw_label", "raw_probability", *(f"raw_prob_{c}" for c in classes)]
    return header


def csv_rows(frame: FrameResult, smoothed: bool) -> list[list]:
    rows = []
    for f in frame.faces:
        row = [frame.index, f"{frame.time_s:.4f}", f.track_id, *(f"{v:.2f}" for v in f.box), f"{f.score:.6f}"]
        row += [f.label, f"{f.probability:.6f}", *(f"{p:.6f}" for p in f.probs)]
        if smoothed:
            row += [f.raw_label, f"{float(f.raw.max()):.6f}", *(f"{p:.6f}" for p in f.raw)]
        rows.append(row)
    return rows


def draw_tracks(frame: FrameResult) -> np.ndarray:
    """A copy of the frame with each face's box and `#<track> <label> <probability>` drawn."""
    out = np.ascontiguousarray(frame.rgb).copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 700.0)
    thick = max(1, int(round(2 * scale)))
    for f in frame.faces:
        colour = COLOURS[(f.track_id - 1) % len(COLOURS)]
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = f"#{f.track_id} {f.label} {f.probability:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base), colour, -1)
        cv2.putText(out, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def open_writer(stem: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    """A video writer for `<stem>.mp4` (mp4v), else `<stem>.avi` (MJPG) where mp4 cannot be written."""
    for suffix, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        path = stem.with_suffix(suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), max(fps, 0.1), size)
        if writer.isOpened():
            return writer, path
        writer.release()
        path.unlink(missing_ok=True)
    raise RuntimeError(f"OpenCV can write neither {stem}.mp4 nor {stem}.avi here")


@dataclass
class VideoResult:
    """What `predict_video_file` did with one input."""

    path: Path
    json_path: Path
    csv_path: Path | None = None
    video_path: Path | None = None
    record: dict | None = None
    error: str | None = None

    def line(self) -> str:
        """The one summary line printed per video."""
        if self.error:
            return f"{self.path}: skipped: {self.error}"
        r = self.record
        s = r["summary"]
        what = (
            f"{len(s['tracks'])} track(s), clip {s['dominant_emotion']} "
            f"({100 * s['dominant_share']:.0f}% of face-frames)"
            if s["tracks"]
            else r["message"]
        )
        stop = f"; {r['stopped']}" if r.get("stopped") else ""
        return (
            f"{self.path}: {s['frames_sampled']} frames sampled in {r['seconds']:.1f} s "
            f"({r['frames_per_second']:.1f} frames/s): {what}{stop} -> {self.csv_path}, {self.video_path}"
        )


def predict_video_file(
    predictor,
    path: Path,
    out_dir: Path,
    name: str,
    sampling: Sampling | None = None,
    smoothing: Smoothing | None = None,
    memory_s: float = 2.0,
    batch_frames: int = 8,
    progress: bool = True,
) -> VideoResult:
    """Stream one video through `VideoStream`, writing its CSV, JSON and annotated video into `out_dir`.
    A file that is no readable video gets a JSON with an `error` and nothing else."""
    json_path = out_dir / f"{name}.json"
    try:
        stream = VideoStream(predictor, path, sampling, smoothing, memory_s=memory_s, batch_frames=batch_frames)
    except BadVideoError as err:
        json_path.write_text(json.dumps({"video": str(path), "error": str(err)}, indent=2))
        return VideoResult(path, json_path, error=str(err))
    frames, smooth = stream.frames, stream.smoothing
    summary = VideoSummary(stream.classes)
    csv_path = out_dir / f"{name}.csv"
    writer, video_path = open_writer(out_dir / f"{name}_annotated", stream.rate, (frames.width, frames.height))
    started = time.perf_counter()
    bar = tqdm(
        total=frames.expected_samples() or None, desc=path.name, unit="frame", disable=not progress, dynamic_ncols=True
    )
    try:
        with csv_path.open("w", newline="") as fh:
            table = csv.writer(fh)
            table.writerow(csv_header(stream.classes, smooth.on))
            for frame in stream:
                table.writerows(csv_rows(frame, smooth.on))
                writer.write(cv2.cvtColor(draw_tracks(frame), cv2.COLOR_RGB2BGR))
                summary.add(frame)
                bar.update(1)
    finally:
        bar.close()
        writer.release()
    seconds = time.perf_counter() - started
    record = {
        "video": str(path),
        "width": frames.width,
        "height": frames.height,
        "fps": round(frames.fps, 4),
        "frames_announced": frames.frame_count,
        "frames_decoded": frames.decoded,
        "sampling": stream.sampling.describe(),
        "sampled_fps": round(stream.rate, 4),
        "smoothing": smooth.describe(),
        "track_memory_s": memory_s,
        "threshold": predictor.threshold,
        "min_face_size": predictor.min_face_size,
        "detect_max_side": predictor.video_detect_max_side,
        "classes": list(stream.classes),
        "stopped": frames.stopped,
        "seconds": round(seconds, 3),
        "detect_seconds": round(stream.detect_seconds, 3),
        "classify_seconds": round(stream.classify_seconds, 3),
        "frames_per_second": round(summary.frames / seconds, 3) if seconds > 0 else 0.0,
        "summary": summary.to_dict(),
    }
    if not summary.tracks:
        record["message"] = (
            f"no face: none tracked in {summary.frames} sampled frames (MTCNN threshold {predictor.threshold}, "
            f"min face size {predictor.min_face_size} px)"
        )
    json_path.write_text(json.dumps(record, indent=2))
    return VideoResult(path, json_path, csv_path, video_path, record)
