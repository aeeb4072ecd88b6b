"""`glamor prepare cache`, and what a crash mid-build leaves behind: nothing taken for a whole cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glamor_lightning.cli import main
from glamor_lightning.data import cache as cache_mod
from glamor_lightning.data.cache import CacheSpec, cache_path, ensure_cache, remove_stale_partials
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.index import FaceRow, read_index, write_index
from real_photos import scene, write_image

REPO = Path(__file__).resolve().parents[2]


def make_root(root: Path, n: int = 8) -> Path:
    rows = []
    for i in range(n):
        split, label = ("train", "test")[i % 2], ("Happy", "Sad")[i // 2 % 2]
        rel = f"{split}/{label}/{i:03d}.png"
        write_image(root / rel, scene(size=(120, 80), head_px=40, at=(5 + 3 * i, 5)))
        rows.append(FaceRow(split, rel, label, (5.0 + 3 * i, 5.0, 45.0 + 3 * i, 50.0), 1.0, "mtcnn"))
    write_index(root / "faces.csv", rows)
    return root


def complete_caches(root: Path) -> list[Path]:
    return [p for p in (root / ".cache").glob("packed-*") if (p / "manifest.json").is_file()]


def leftovers(root: Path) -> list[Path]:
    return list((root / ".cache").glob(".*.partial")) if (root / ".cache").is_dir() else []


def test_cache_command_builds_then_reuses_and_the_data_module_agrees(tmp_path, capsys):
    root = make_root(tmp_path / "root")
    assert main(["prepare", "cache", str(root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    path = cache_path(root, CacheSpec())
    assert f"cache {path}: 8 rows" in out and "MiB, built in" in out and "per 1,000 images" in out
    assert main(["prepare", "cache", str(root), "--workers", "0"]) == 0
    assert "reused" in capsys.readouterr().out
    dm = EmotionDataModule(str(root), batch_size=2, cache_workers=0, val_from="test")
    dm.setup("fit")
    assert dm.cache.path == path and dm.cache.ok.all()
    assert main(["prepare", "cache", str(root), "--workers", "0", "--context-visible"]) == 0
    assert len(complete_caches(root)) == 2


def test_exception_mid_build_leaves_nothing_and_a_rerun_builds_it_whole(tmp_path, monkeypatch):
    root = make_root(tmp_path / "root")
    rows = read_index(root / "faces.csv")
    real, calls = cache_mod._render, []

    def flaky(args):
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("injected crash")
        return real(args)

    monkeypatch.setattr(cache_mod, "_render", flaky)
    with pytest.raises(MemoryError):
        ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert complete_caches(root) == [] and leftovers(root) == []
    monkeypatch.setattr(cache_mod, "_render", real)
    cache = ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert len(cache) == 8 and cache.ok.all() and all(np.asarray(cache.faces[i]).std() > 0 for i in range(8))


KILLED_BUILD = """
import sys, time
from pathlib import Path
from glamor_lightning.data import cache
from glamor_lightning.data.index import read_index
real = cache._render
def slow(args):
    time.sleep(0.3)
    return real(args)
cache._render = slow
root = Path(sys.argv[1])
cache.ensure_cache(root, read_index(root / "faces.csv"), cache.CacheSpec(), workers=0, progress=False)
"""


def test_sigkill_mid_build_leaves_no_cache_taken_as_whole(tmp_path):
    root = make_root(tmp_path / "root")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(root)], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any((p / "faces.npy").exists() for p in leftovers(root)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        time.sleep(0.5)  # a few rows in
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert complete_caches(root) == [] and len(leftovers(root)) == 1
    cache = ensure_cache(root, read_index(root / "faces.csv"), CacheSpec(), workers=0, progress=False)
    assert len(cache) == 8 and cache.ok.all() and np.asarray(cache.contexts[7]).std() > 0
    assert leftovers(root) == []  # the dead build's folder was removed


def test_partial_folders_of_live_or_foreign_builds_are_left_alone(tmp_path):
    dest = tmp_path / "packed-abc"
    mine = tmp_path / f".packed-abc.{cache_mod._HOST}-{os.getpid()}.x1y2.partial"
    foreign = tmp_path / ".packed-abc.other-node-1.x1y2.partial"
    dead = tmp_path / f".packed-abc.{cache_mod._HOST}-999999999.x1y2.partial"
    for p in (mine, foreign, dead):
        p.mkdir()
    assert remove_stale_partials(dest) == [dead]
    assert mine.is_dir() and foreign.is_dir() and not dead.exists()


AFTER_IN_PROCESS_BUILD = """
import sys
from pathlib import Path
from glamor_lightning.data.cache import CacheSpec, build_cache
from glamor_lightning.data.index import read_index
root = Path(sys.argv[1])
rows = read_index(root / "faces.csv")
build_cache(root, rows, CacheSpec(), root / "serial", workers=0, progress=False)  # OpenCV threads busy here
build_cache(root, rows, CacheSpec(), root / "parallel", workers=2, progress=False)  # then forked workers
print("built")
"""


def test_worker_pool_after_opencv_used_its_threads_does_not_hang(tmp_path):
    """Forked workers once hung for ever in cv2.setNumThreads when this process had used OpenCV's pool."""
    root = tmp_path / "root"
    rows = []
    for i in range(4):  # CAER-S-sized pictures, so OpenCV runs its thread pool
        rel = f"train/Happy/{i}.png"
        write_image(root / rel, scene(size=(712, 400), head_px=100, at=(40 * i, 20)))
        rows.append(FaceRow("train", rel, "Happy", (40.0 * i, 20.0, 40.0 * i + 100, 130.0), 1.0, "mtcnn"))
    write_index(root / "faces.csv", rows)
    done = subprocess.run(
        [sys.executable, "-c", AFTER_IN_PROCESS_BUILD, str(root)], cwd=REPO, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0 and "built" in done.stdout, done.stderr[-2000:]
    assert np.array_equal(np.load(root / "serial/faces.npy"), np.load(root / "parallel/faces.npy"))
