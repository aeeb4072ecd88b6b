"""`glamor prepare detect` on real photos: boxes as MTCNN gives them, no-face rows, bad files, resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glamor_lightning.data.detect import DELAY_ENV, ERRORS_NAME, detect_root
from glamor_lightning.data.index import read_index, write_index
from glamor_lightning.data.mtcnn import Detection
from real_photos import astronaut, background, detector, scene, write_image

REPO = Path(__file__).resolve().parents[2]


def boxes_close(a, b, tol=3.0) -> bool:
    return a is not None and b is not None and np.abs(np.subtract(a, b)).max() <= tol


def test_astronaut_box_is_what_mtcnn_gives(tmp_path):
    write_image(tmp_path / "test/Happy/astronaut.png", astronaut())
    direct = detector().detect([astronaut()])[0]
    assert len(direct) == 1 and direct[0].score > 0.99
    summary = detect_root(tmp_path, detector=detector(), progress=False)
    assert (summary.faces, summary.no_face, summary.errors) == (1, 0, {})
    [row] = read_index(tmp_path / "faces.csv")
    assert (row.split, row.path, row.label, row.source) == ("test", "test/Happy/astronaut.png", "Happy", "mtcnn")
    assert boxes_close(row.box, direct[0].box, tol=0.01)  # the CSV keeps 2 decimals
    x1, y1, x2, y2 = row.box  # the face of the portrait, inside her head
    assert 150 <= x1 < x2 <= 300 and 40 <= y1 < y2 <= 210


def test_several_faces_policy_and_batching(tmp_path):
    """A picture with three faces: the detect step keeps the one its policy asks for, as MTCNN boxes it."""
    canvas = scene("rocket", size=(320, 200), head_px=50, at=(20, 20))
    canvas[60 : 60 + 102, 130 : 130 + 90] = scene("coffee", size=(90, 102), head_px=86, at=(2, 2))
    canvas[30 : 30 + 64, 250 : 250 + 56] = scene("cat", size=(56, 64), head_px=50, at=(3, 3), mirror=True)
    direct = detector().detect([canvas])[0]
    assert len(direct) == 3, direct
    largest = max(direct, key=lambda d: d.area)
    assert 130 <= largest.box[0] < largest.box[2] <= 220  # the big head in the middle
    for i in range(3):  # same-size images run as one batch
        write_image(tmp_path / f"train/Fear/{i}.png", canvas)
    detect_root(tmp_path, detector=detector(), policy="largest", batch_size=4, progress=False)
    rows = read_index(tmp_path / "faces.csv")
    assert len(rows) == 3 and all(boxes_close(r.box, largest.box) for r in rows)
    detect_root(tmp_path, detector=detector(), policy="confidence", redo=True, progress=False)
    best = max(direct, key=lambda d: d.score)
    assert all(boxes_close(r.box, best.box) for r in read_index(tmp_path / "faces.csv"))


def test_no_face_tiny_and_unreadable_images(tmp_path):
    write_image(tmp_path / "train/Neutral/coffee.png", background("coffee", (240, 160)))
    write_image(tmp_path / "train/Neutral/tiny.png", scene(size=(16, 12), head_px=8, at=(2, 2)))
    write_image(tmp_path / "train/Happy/face.jpg", scene(size=(64, 64), head_px=40, at=(10, 5)))
    (tmp_path / "train/Happy/empty.png").write_bytes(b"")
    (tmp_path / "train/Sad/notes.jpg").parent.mkdir(parents=True)
    (tmp_path / "train/Sad/notes.jpg").write_text("not a picture")
    summary = detect_root(tmp_path, detector=detector(), progress=False)
    rows = {r.path: r for r in read_index(tmp_path / "faces.csv")}
    assert set(rows) == {"train/Neutral/coffee.png", "train/Neutral/tiny.png", "train/Happy/face.jpg"}
    assert rows["train/Neutral/coffee.png"].source == rows["train/Neutral/tiny.png"].source == "none"
    assert rows["train/Neutral/coffee.png"].box is None and rows["train/Happy/face.jpg"].source == "mtcnn"
    assert (summary.faces, summary.no_face, summary.too_small) == (1, 2, 1)
    assert set(summary.errors) == {"train/Happy/empty.png", "train/Sad/notes.jpg"}
    with (tmp_path / ERRORS_NAME).open() as fh:
        errors = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert "empty file" in errors["train/Happy/empty.png"] and "not a readable image" in errors["train/Sad/notes.jpg"]
    text = summary.text(tmp_path)
    assert "2 unreadable images" in text and "train/Sad/notes.jpg" in text
    # fixed files are picked up by the next run; the errors file goes when nothing is left
    (tmp_path / "train/Happy/empty.png").unlink()
    (tmp_path / "train/Sad/notes.jpg").unlink()
    again = detect_root(tmp_path, detector=detector(), progress=False)
    assert (again.resumed, again.detected, again.errors) == (3, 0, {})
    assert not (tmp_path / ERRORS_NAME).exists()


class CountingDetector:
    """Stand-in detector: one fixed face per image, counting the images it saw; can fail or stop."""

    def __init__(self, fail_on_batches: bool = False, bad_shape=None, stop_after: int | None = None):
        self.seen, self.calls = 0, 0
        self.fail_on_batches, self.bad_shape, self.stop_after = fail_on_batches, bad_shape, stop_after

    def detect(self, images):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        if self.fail_on_batches and len(images) > 1:
            raise RuntimeError("out of memory")
        if any(im.shape == self.bad_shape for im in images):
            raise ValueError("cannot handle this one")
        self.seen += len(images)
        return [[Detection((1.0, 2.0, 21.0, 22.0), 0.99)] for _ in images]


class Counted:
    """The real detector, counting the images it is given."""

    def __init__(self, real):
        self.real, self.seen = real, 0

    def detect(self, images):
        self.seen += len(images)
        return self.real.detect(images)


def _tree(root: Path, n: int, sizes=((32, 32),)) -> list[str]:
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        rel = f"train/{('Happy', 'Sad')[i % 2]}/{i:03d}.png"
        write_image(root / rel, np.full((h, w, 3), 10 * i, np.uint8))
        paths.append(rel)
    return paths


def test_ctrl_c_keeps_finished_rows_and_rerun_finishes(tmp_path):
    paths = _tree(tmp_path, 10)
    first = detect_root(
        tmp_path, detector=CountingDetector(stop_after=2), batch_size=2, flush_every=1000, progress=False
    )
    assert first.interrupted and "again" in first.text(tmp_path)
    done = read_index(tmp_path / "faces.csv")  # saved on the way out, not only at the flush interval
    assert [r.path for r in done] == sorted(paths)[:4]
    second = CountingDetector()
    summary = detect_root(tmp_path, detector=second, batch_size=2, progress=False)
    assert second.seen == 6 and summary.resumed == 4
    assert sorted(r.path for r in read_index(tmp_path / "faces.csv")) == sorted(paths)


def test_failing_batch_is_retried_image_by_image(tmp_path):
    _tree(tmp_path, 6, sizes=((32, 32), (40, 30)))
    det = CountingDetector(fail_on_batches=True, bad_shape=(30, 40, 3))
    summary = detect_root(tmp_path, detector=det, batch_size=8, progress=False)
    assert summary.faces == 3 and len(summary.errors) == 3
    assert all("face detector failed (cannot handle this one)" in r for r in summary.errors.values())
    assert len(read_index(tmp_path / "faces.csv")) == 3


def test_rows_of_moved_or_deleted_images_are_dropped(tmp_path):
    paths = _tree(tmp_path, 4)
    detect_root(tmp_path, detector=CountingDetector(), progress=False)
    (tmp_path / paths[0]).unlink()
    (tmp_path / "train/Fear").mkdir()
    moved = "train/Fear/" + Path(paths[1]).name
    (tmp_path / paths[1]).rename(tmp_path / moved)
    det = CountingDetector()
    summary = detect_root(tmp_path, detector=det, progress=False)
    assert (summary.stale, summary.resumed, det.seen) == (2, 2, 1)
    rows = {r.path: r.label for r in read_index(tmp_path / "faces.csv")}
    assert rows[moved] == "Fear" and paths[0] not in rows and paths[1] not in rows


def test_killed_detection_resumes_without_losing_or_redoing_rows(tmp_path):
    """SIGKILL a real `glamor prepare detect` after its first save; the rerun adds only the rest."""
    root = tmp_path / "root"
    for i in range(12):
        write_image(
            root / f"train/{('Happy', 'Sad', 'Fear')[i % 3]}/{i:02d}.png",
            scene(size=(64, 64), head_px=40, at=(10 + i % 5, 5), mirror=bool(i % 2)),
        )
    env = {**os.environ, DELAY_ENV: "0.7", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "glamor_lightning.cli",
        "prepare",
        "detect",
        str(root),
        "--batch-size",
        "2",
        "--flush-every",
        "4",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = root / "faces.csv"
    try:
        deadline = time.monotonic() + 120
        while not index.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert index.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no save"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = read_index(index)  # whatever moment the kill came, the file is a whole CSV
    assert 4 <= len(saved) < 12 and all(r.source == "mtcnn" for r in saved)
    # mark the saved rows, to see that the rerun keeps them rather than detecting them again
    write_index(index, [r.__class__(r.split, r.path, r.label, r.box, 0.5, r.source) for r in saved])
    counter = Counted(detector())
    summary = detect_root(root, detector=counter, batch_size=4, progress=False)
    rows = read_index(index)
    assert sorted(r.path for r in rows) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len({r.path for r in rows}) == 12 and summary.resumed == len(saved)
    assert counter.seen == 12 - len(saved)
    assert sum(r.score == 0.5 for r in rows) == len(saved)
    assert all(r.source == "mtcnn" for r in rows)


def test_bad_policy_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="face policy 'biggest'"):
        detect_root(tmp_path, policy="biggest")


def test_a_timed_save_with_no_new_row_writes_nothing(tmp_path):
    """The periodic save must wait for a first row: an MTCNN that takes longer to start than
    `flush_seconds` (a loaded machine) wrote an empty faces.csv, which a kill then left behind as if
    nothing had been detected (seen in CI)."""
    from glamor_lightning.data.detect import _Saver
    from glamor_lightning.data.layout import scan_root

    root = tmp_path / "root"
    write_image(root / "train/Happy/a.png", scene(size=(64, 64), head_px=40, at=(10, 5)))
    saver = _Saver(root, scan_root(root), {}, {}, every=500, seconds=0.0)
    saver.added(0)
    assert not (root / "faces.csv").exists()
