"""`glamor prepare detect`: MTCNN over every image of a root, written to `ROOT/faces.csv`, resumable.

- One row per readable image: the face MTCNN finds (most confident or largest, at or above the
  confidence threshold) with `source=mtcnn`, or an empty box with `source=none`.
- Images too small to hold a face of the detector's minimum size get a `none` row without running
  MTCNN (which fails on them).
- Unreadable images (empty, truncated, not an image) get no row: they are named with the reason in
  `ROOT/faces.errors.csv` and counted in the summary, so they can never enter training with a label.
- Resume: rows already in faces.csv (for images still present under the same split and class) are
  kept and not recomputed. Progress is saved every `flush_every` images or `flush_seconds` seconds,
  and on Ctrl-C, by rewriting faces.csv atomically (temp file + rename): the file on disk is always a
  complete CSV, and a kill loses at most the rows since the last save.
- Images are decoded by threads ahead of the detector and run in batches of one size.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glamor_lightning.data.images import BadImageError, read_rgb
from glamor_lightning.data.index import INDEX_NAME, FaceRow, atomic_write_text, read_index, write_index
from glamor_lightning.data.layout import ImageEntry, Layout, scan_root

ERRORS_NAME = "faces.errors.csv"
#: test hook: seconds to sleep after each detector batch (to interrupt a run at a known point)
DELAY_ENV = "GLAMOR_DETECT_TEST_DELAY"


@dataclass
class DetectSummary:
    images: int = 0  # images in the root
    resumed: int = 0  # rows kept from an earlier run
    faces: int = 0  # new rows with a face
    no_face: int = 0  # new rows without a face (too_small included)
    too_small: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # path → reason, no row written
    stale: int = 0  # rows of faces.csv dropped: their image is gone or moved
    seconds: float = 0.0  # the whole run
    loop_seconds: float = 0.0  # reading and detecting, without loading the detector
    interrupted: bool = False

    @property
    def detected(self) -> int:
        return self.faces + self.no_face

    def text(self, root: Path) -> str:
        rate = f", {1000 * self.loop_seconds / self.detected:.0f} s per 1,000 images" if self.detected else ""
        lines = [
            f"faces.csv: {self.resumed + self.detected:,} of {self.images:,} images "
            f"({self.resumed:,} kept from an earlier run, {self.faces:,} new with a face, "
            f"{self.no_face:,} new without: {self.too_small:,} of them too small to search) "
            f"in {self.seconds:.1f} s{rate}"
        ]
        if self.stale:
            lines.append(f"dropped {self.stale:,} rows of faces.csv whose image is gone or moved")
        if self.errors:
            lines.append(f"{len(self.errors):,} unreadable images were left out (listed in {root / ERRORS_NAME}):")
            lines += [f"  {p}: {r}" for p, r in itertools.islice(self.errors.items(), 10)]
            if len(self.errors) > 10:
                lines.append("  ...")
        if self.interrupted:
            lines.append(f"interrupted: run `glamor prepare detect {root}` again to go on from here")
        return "\n".join(lines)


def _load(path: Path) -> np.ndarray | str:
    try:
        return read_rgb(path)
    except BadImageError as err:
        return str(err)


def prefetch(fn: Callable, items: Iterable, ahead: int, workers: int = 2) -> Iterator[tuple]:
    """Yield (item, fn(item)) in order, computing up to `ahead` items in threads in advance."""
    it = iter(items)
    with ThreadPoolExecutor(max(1, workers)) as ex:
        queue = deque((x, ex.submit(fn, x)) for x in itertools.islice(it, ahead))
        while queue:
            item, future = queue.popleft()
            for nxt in itertools.islice(it, 1):
                queue.append((nxt, ex.submit(fn, nxt)))
            yield item, future.result()


def _kept_rows(root: Path, layout: Layout, redo: bool) -> tuple[dict[str, FaceRow], int]:
    """Rows of an existing faces.csv that still match an image of the layout."""
    if redo or not (root / INDEX_NAME).is_file():
        return {}, 0
    entries = layout.by_path()
    rows = read_index(root / INDEX_NAME)
    kept = {r.path: r for r in rows if (e := entries.get(r.path)) and (e.split, e.label) == (r.split, r.label)}
    return kept, len(rows) - len(kept)


def write_errors(root: Path, errors: dict[str, str]) -> None:
    """`ROOT/faces.errors.csv` (path,reason), written atomically; removed when there are none."""
    path = root / ERRORS_NAME
    if not errors:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("path", "reason"))
    writer.writerows(sorted(errors.items()))
    atomic_write_text(path, buf.getvalue())


class _Saver:
    """Rewrites faces.csv (rows in layout order) every `every` new rows or `seconds` seconds."""

    def __init__(
        self, root: Path, layout: Layout, rows: dict[str, FaceRow], errors: dict[str, str], every: int, seconds: float
    ) -> None:
        self.root, self.layout, self.rows, self.errors = root, layout, rows, errors
        self.every, self.seconds = max(1, every), seconds
        self.pending, self.last = 0, time.monotonic()

    def added(self, n: int) -> None:
        """Count `n` new rows; save when enough are pending or time is up (never with nothing new: a
        time-based save before the first row would write an empty faces.csv, as a slow detector start did)."""
        self.pending += n
        if self.pending and (self.pending >= self.every or time.monotonic() - self.last >= self.seconds):
            self.save()

    def save(self) -> None:
        write_index(self.root / INDEX_NAME, (self.rows[e.path] for e in self.layout.images if e.path in self.rows))
        write_errors(self.root, self.errors)
        self.pending, self.last = 0, time.monotonic()


def detect_root(
    root: str | os.PathLike,
    detector=None,
    device: str = "cpu",
    batch_size: int = 16,
    policy: str = "confidence",
    threshold: float = 0.9,
    min_face_size: int = 20,
    flush_every: int = 500,
    flush_seconds: float = 60.0,
    redo: bool = False,
    workers: int = 2,
    progress: bool = True,
    layout: Layout | None = None,
) -> DetectSummary:
    """Detect the face of every image of `root` not yet in its faces.csv; see the module docstring.

    `detector` is anything with `detect(list of RGB arrays) -> list of lists of Detection` (default:
    `FaceDetector(device, threshold, min_face_size)`, made only when some image needs it).
    """
    from glamor_lightning.data.mtcnn import FACE_POLICIES

    if policy not in FACE_POLICIES:
        raise ValueError(f"face policy {policy!r}; expected one of {FACE_POLICIES}")
    root = Path(root)
    started = time.perf_counter()
    layout = layout or scan_root(root)
    rows, stale = _kept_rows(root, layout, redo)
    summary = DetectSummary(images=len(layout), resumed=len(rows), stale=stale)
    pending = [e for e in layout.images if e.path not in rows]
    saver = _Saver(root, layout, rows, summary.errors, flush_every, flush_seconds)
    if pending and detector is None:
        from glamor_lightning.data.mtcnn import FaceDetector

        detector = FaceDetector(device, threshold=threshold, min_face_size=min_face_size)
    from glamor_lightning.data.mtcnn import has_pyramid  # torch: only when detecting

    min_side = getattr(detector, "min_face_size", min_face_size)
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    window = max(1, batch_size) * 4  # images read ahead and grouped by size
    bar = tqdm(total=len(pending), desc=f"detect {root.name}", unit="img", disable=not progress, dynamic_ncols=True)
    loop_started = time.perf_counter()
    loaded = prefetch(lambda e: _load(root / e.path), pending, ahead=2 * window, workers=workers)
    try:
        while chunk := list(itertools.islice(loaded, window)):
            by_shape: dict[tuple, list[tuple[ImageEntry, np.ndarray]]] = {}
            for entry, image in chunk:
                if isinstance(image, str):
                    summary.errors[entry.path] = image
                elif not has_pyramid(image.shape[0], image.shape[1], min_side):  # as MTCNN itself decides
                    rows[entry.path] = FaceRow(entry.split, entry.path, entry.label, None, None, "none")
                    summary.no_face += 1
                    summary.too_small += 1
                else:
                    by_shape.setdefault(image.shape, []).append((entry, image))
            undetected = len(chunk) - sum(map(len, by_shape.values()))
            bar.update(undetected)
            saver.added(undetected)
            for group in by_shape.values():
                for i in range(0, len(group), max(1, batch_size)):
                    batch = group[i : i + batch_size]
                    _detect_batch(detector, batch, policy, rows, summary)
                    if delay:
                        time.sleep(delay)
                    bar.update(len(batch))
                    saver.added(len(batch))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        loaded.close()
        bar.close()
        saver.save()
        summary.seconds = time.perf_counter() - started
        summary.loop_seconds = time.perf_counter() - loop_started
    return summary


def _detect_batch(
    detector, batch: list[tuple[ImageEntry, np.ndarray]], policy: str, rows: dict[str, FaceRow], summary: DetectSummary
) -> None:
    """Detect one same-size batch; when the detector fails on it, try its images one at a time."""
    from glamor_lightning.data.mtcnn import pick_face

    try:
        found = detector.detect([image for _, image in batch])
    except (RuntimeError, ValueError, IndexError) as err:
        if len(batch) > 1:
            for item in batch:
                _detect_batch(detector, [item], policy, rows, summary)
            return
        summary.errors[batch[0][0].path] = f"{batch[0][0].path}: face detector failed ({err})"
        return
    for (entry, _), dets in zip(batch, found):
        face = pick_face(dets, policy)
        if face is None:
            rows[entry.path] = FaceRow(entry.split, entry.path, entry.label, None, None, "none")
            summary.no_face += 1
        else:
            rows[entry.path] = FaceRow(entry.split, entry.path, entry.label, face.box, face.score, "mtcnn")
            summary.faces += 1
