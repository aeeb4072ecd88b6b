"""`glamor prepare ncaer`: NCAER-S, frames sampled from the CAER videos, in the standard root layout.

Input `CAER_ROOT/{train,validation,test}/<Class>/<clip>.avi` (`val/` and other video extensions are
accepted too). Steps:
1. probe every video (frame count, frame rate, a content fingerprint); an unreadable one is named,
   counted and skipped;
2. keep the splits apart: videos are identified by their content (size and first and last 64 KiB),
   not by name, because CAER numbers its clips per folder (`train/Happy/0001.avi` and
   `test/Happy/0001.avi` are different clips). A clip found in several places is kept once, in the
   first of test, val, train (the evaluation splits stay whole), and the other copies are reported;
3. cut each video into parts of about `segment_seconds` (the frame count divided into
   round(duration / segment) equal parts, at least one) and take one frame of each part at random,
   seeded by `seed` and the clip's path, so a build is reproducible;
4. balance the classes per split: every class is cut down, at random (seeded), to the frame count of
   the split's smallest class;
5. write `OUT/{train,val,test}/<Class>/<clip>_f<frame>.png` (`validation` becomes `val`; each file
   written atomically, files already there are kept, so an interrupted build can simply be rerun) and
   `OUT/ncaer.json` with the settings and counts. A video that yields fewer frames than it announced
   loses the missing picks (reported); the split is then balanced again by removing surplus frames.
Then run `glamor prepare detect OUT` for the face boxes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from tqdm import tqdm

from glamor_lightning.data.classes import CLASSES, canonical_label
from glamor_lightning.data.index import SPLITS, atomic_write_text

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".mpg", ".mpeg", ".m4v", ".webm")
SPLIT_FOLDERS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
KEEP_ORDER = ("test", "val", "train")  # a clip found in several splits stays in the first of these
DEFAULT_FPS = 25.0  # when a video does not say
MANIFEST = "ncaer.json"


class BadVideoError(ValueError):
    """A video that cannot be read; the message names it."""


@dataclass(frozen=True)
class Video:
    split: str
    label: str
    rel: str  # relative to CAER_ROOT
    frames: int = 0
    fps: float = 0.0
    key: str = ""  # content fingerprint

    @property
    def stem(self) -> str:
        """Clip name within its class folder, sub-folders joined by `__`, no extension."""
        return "__".join(PurePosixPath(self.rel).with_suffix("").parts[2:])


@dataclass(frozen=True)
class Pick:
    video: Video
    part: int
    frame: int

    @property
    def out(self) -> str:
        return f"{self.video.split}/{self.video.label}/{self.video.stem}_f{self.frame:05d}.png"


@dataclass
class NcaerReport:
    videos: dict[str, int] = field(default_factory=dict)  # split → videos used
    unreadable: dict[str, str] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped copy, kept copy)
    candidates: dict[str, dict[str, int]] = field(default_factory=dict)  # frames before balancing
    frames: dict[str, dict[str, int]] = field(default_factory=dict)  # frames in OUT at the end
    lost: dict[str, str] = field(default_factory=dict)  # planned frame → why it is missing
    written: int = 0
    existing: int = 0
    removed: int = 0
    seconds: float = 0.0

    def text(self, out: Path) -> str:
        total = sum(sum(c.values()) for c in self.frames.values())
        lines = [
            f"NCAER-S in {out}: {total:,} frames ({self.written:,} written, {self.existing:,} already "
            f"there) from {sum(self.videos.values()):,} videos in {self.seconds:.1f} s"
        ]
        for split, c in self.frames.items():
            missing = [k for k in CLASSES if k not in c]
            lines.append(
                f"  {split:<5} {sum(c.values()):>7,} frames, {min(c.values(), default=0):,} per "
                f"class ({self.videos.get(split, 0):,} videos, "
                f"{sum(self.candidates.get(split, {}).values()):,} frames before balancing)"
                + (f"; no {', '.join(missing)}" if missing else "")
            )
        for name, items in (
            ("unreadable videos skipped", list(self.unreadable.items())),
            ("copies of a clip dropped", [(a, f"same clip as {b}") for a, b in self.duplicates]),
            ("planned frames the video did not yield", list(self.lost.items())),
        ):
            if items:
                lines.append(f"{len(items):,} {name}:")
                lines += [f"  {a}: {b}" for a, b in items[:10]] + (["  ..."] if len(items) > 10 else [])
        if self.removed:
            lines.append(f"{self.removed:,} frames removed again to keep the classes balanced")
        lines.append(f"next: glamor prepare detect {out}")
        return "\n".join(lines)


def scan_videos(root: Path) -> tuple[list[Video], list[str]]:
    """Videos of a CAER root with split and canonical label; other files are returned as ignored."""
    if not root.is_dir():
        raise FileNotFoundError(f"No CAER folder at {root}")
    split_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_FOLDERS)
    if not split_dirs:
        raise ValueError(f"{root} has no train/, validation/ or test/ folder of CAER videos")
    videos, ignored = [], []
    for split_dir in split_dirs:
        for class_dir in sorted(p for p in split_dir.iterdir() if not p.name.startswith(".")):
            if not class_dir.is_dir():
                ignored.append(class_dir.relative_to(root).as_posix())
                continue
            label = canonical_label(class_dir.name, where=str(class_dir))
            for file in sorted(class_dir.rglob("*")):
                rel = file.relative_to(root).as_posix()
                if file.is_dir() or any(part.startswith(".") for part in PurePosixPath(rel).parts):
                    continue
                if file.suffix.lower() in VIDEO_EXTENSIONS:
                    videos.append(Video(SPLIT_FOLDERS[split_dir.name.lower()], label, rel))
                else:
                    ignored.append(rel)
    return videos, ignored


def fingerprint(path: Path, chunk: int = 1 << 16) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()[:24]


def probe(path: Path) -> tuple[int, float]:
    """(frame count, frames per second) of a video that opens and decodes its first frame."""
    if not path.is_file() or path.stat().st_size == 0:
        raise BadVideoError(f"{path}: empty or missing file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BadVideoError(f"{path}: cannot be opened as a video")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not cap.grab():
            raise BadVideoError(f"{path}: no frame can be decoded")
        if frames <= 0:  # the container does not say: count
            frames = 1
            while cap.grab():
                frames += 1
    finally:
        cap.release()
    return frames, fps if np.isfinite(fps) and fps > 0 else DEFAULT_FPS


def _probe_job(args: tuple[Path, Video]) -> Video | str:
    path, video = args
    try:
        frames, fps = probe(path)
        return Video(video.split, video.label, video.rel, frames, fps, fingerprint(path))
    except (BadVideoError, OSError) as err:
        return str(err).replace(f"{path}: ", "")


def parts(n_frames: int, fps: float, segment_seconds: float) -> list[tuple[int, int]]:
    """[start, end) frame ranges of about `segment_seconds` each, covering the whole video."""
    per = max(1.0, segment_seconds * fps)
    n = max(1, int(n_frames / per + 0.5))
    edges = np.linspace(0, n_frames, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def pick_frames(video: Video, segment_seconds: float, seed: int) -> list[Pick]:
    """One random frame of each part, seeded by `seed` and the clip's path."""
    rng = np.random.default_rng([seed, zlib.crc32(video.rel.encode())])
    return [
        Pick(video, k, int(rng.integers(a, b)))
        for k, (a, b) in enumerate(parts(video.frames, video.fps, segment_seconds))
    ]


def _balance(picks: list[Pick], rng: np.random.Generator) -> list[Pick]:
    """Cut every class down to the count of the smallest class present, at random."""
    by_class: dict[str, list[Pick]] = {}
    for p in picks:
        by_class.setdefault(p.video.label, []).append(p)
    if not by_class:
        return []
    least = min(len(v) for v in by_class.values())
    kept = []
    for label in sorted(by_class):
        group = by_class[label]
        kept += [group[i] for i in sorted(rng.choice(len(group), least, replace=False))]
    return kept


def _extract_job(args: tuple[Path, Path, list[tuple[int, str]]]) -> tuple[int, int, dict[str, str]]:
    """Decode one video front to back and write the wanted frames; (written, existing, lost)."""
    src, out, wanted = args
    todo = {frame: rel for frame, rel in wanted if not (out / rel).is_file()}
    existing, written, lost = len(wanted) - len(todo), 0, {}
    if not todo:
        return written, existing, lost
    cap = cv2.VideoCapture(str(src))
    index = -1
    try:
        while todo and index < max(todo) and cap.grab():
            index += 1
            if index in todo:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    lost[todo.pop(index)] = f"{src}: frame {index} does not decode"
                    continue
                _write_png(out / todo.pop(index), frame)
                written += 1
    finally:
        cap.release()
    for frame, rel in todo.items():
        lost[rel] = f"{src}: ended after {index + 1} frames, before frame {frame}"
    return written, existing, lost


def _write_png(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"cannot encode {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def _run(fn, jobs: list, workers: int, desc: str, progress: bool, ordered: bool = True):
    """fn over jobs, in `workers` processes (0: in this one), with a progress bar."""
    bar = dict(total=len(jobs), desc=desc, unit="video", disable=not progress)
    if workers <= 0:
        yield from tqdm(map(fn, jobs), **bar)
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # inherited by the workers (setting it in a forked worker can hang)
    try:
        pool = mp.get_context("fork").Pool(workers)
    finally:
        cv2.setNumThreads(threads)
    with pool:
        yield from tqdm(pool.imap(fn, jobs) if ordered else pool.imap_unordered(fn, jobs), **bar)


def build_ncaer(
    caer_root: str | os.PathLike,
    out: str | os.PathLike,
    segment_seconds: float = 2.0,
    seed: int = 0,
    balance: bool = True,
    workers: int = 0,
    progress: bool = True,
) -> NcaerReport:
    """Build NCAER-S from the CAER videos; see the module docstring."""
    if segment_seconds <= 0:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
    caer_root, out = Path(caer_root), Path(out)
    started = time.perf_counter()
    report = NcaerReport()
    found, _ = scan_videos(caer_root)
    videos: list[Video] = []
    probed = list(_run(_probe_job, [(caer_root / v.rel, v) for v in found], workers, "probe videos", progress))
    for video, result in zip(found, probed):
        if isinstance(result, str):
            report.unreadable[video.rel] = result
        else:
            videos.append(result)
    # a clip in several places is kept once: first of test, val, train
    videos.sort(key=lambda v: (KEEP_ORDER.index(v.split), v.rel))
    first: dict[str, Video] = {}
    for v in videos:
        if v.key in first:
            report.duplicates.append((v.rel, first[v.key].rel))
        else:
            first[v.key] = v
    picks: list[Pick] = []
    for i, split in enumerate(SPLITS):
        split_videos = sorted((v for v in first.values() if v.split == split), key=lambda v: v.rel)
        candidates = [p for v in split_videos for p in pick_frames(v, segment_seconds, seed)]
        report.candidates[split] = dict(Counter(p.video.label for p in candidates))
        picks += _balance(candidates, np.random.default_rng([seed, i])) if balance else candidates
    _check_out(out, {p.out for p in picks})
    by_video: dict[str, list[Pick]] = {}
    for p in picks:
        by_video.setdefault(p.video.rel, []).append(p)
    jobs = [(caer_root / rel, out, [(p.frame, p.out) for p in ps]) for rel, ps in by_video.items()]
    for written, existing, lost in _run(_extract_job, jobs, workers, "extract frames", progress, ordered=False):
        report.written += written
        report.existing += existing
        report.lost.update(lost)
    present = [p for p in picks if (out / p.out).is_file()]
    if balance and report.lost:  # a short video lost frames: balance again by removing surplus
        kept = []
        for i, split in enumerate(SPLITS):
            kept += _balance([p for p in present if p.video.split == split], np.random.default_rng([seed, i, 1]))
        for p in set(present) - set(kept):
            (out / p.out).unlink()
            report.removed += 1
        present = kept
    for split in SPLITS:
        counts = Counter(p.video.label for p in present if p.video.split == split)
        if counts:
            report.frames[split] = {c: counts[c] for c in CLASSES if c in counts}
            report.videos[split] = len({p.video.rel for p in present if p.video.split == split})
    report.seconds = time.perf_counter() - started
    manifest = {
        "source": str(caer_root),
        "segment_seconds": segment_seconds,
        "seed": seed,
        "balance": balance,
        **{k: v for k, v in asdict(report).items() if k not in ("written", "existing", "seconds")},
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return report


def _check_out(out: Path, planned: set[str]) -> None:
    """OUT must hold no image this build would not write (another seed, another segment length)."""
    if not out.is_dir():
        return
    stray = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*.png")
        if not p.name.startswith(".") and p.relative_to(out).as_posix() not in planned
    )
    if stray:
        raise ValueError(
            f"{out} holds {len(stray)} images this build would not write (e.g. {stray[0]}): "
            f"use an empty folder, or the --seed and --segment-seconds it was built with"
        )
