"""The NCAER-S builder on short videos written here with OpenCV (MJPG .avi, 10 fps)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from glamor_lightning.cli import main
from glamor_lightning.data.layout import scan_root
from glamor_lightning.data.ncaer import Video, build_ncaer, parts, pick_frames

FPS = 10


def frame_value(i: int) -> int:
    return 3 + 4 * i


def write_video(path: Path, frames: int, marker: int) -> Path:
    """Frame i is flat grey `frame_value(i)` with a corner block `marker` that tells videos apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((48, 64, 3), frame_value(i), np.uint8)
        image[:8, :8] = marker
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def caer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caer") / "CAER"
    write_video(root / "train/Happy/0001.avi", 60, 10)  # 3 parts; its copy in test keeps it out of train
    write_video(root / "train/Happy/0002.avi", 40, 20)  # 2 parts
    write_video(root / "train/Happy/0003.avi", 25, 30)  # 1 part (25 frames = 1.25 parts)
    write_video(root / "train/Sad/0001.avi", 40, 40)  # 2 parts
    write_video(root / "validation/Happy/0001.avi", 20, 50)  # 1 part
    write_video(root / "validation/Sad/0001.avi", 30, 60)  # 2 parts (1.5 rounds up)
    (root / "test/Happy").mkdir(parents=True)
    shutil.copy(root / "train/Happy/0001.avi", root / "test/Happy/0001.avi")
    write_video(root / "test/Sad/0001.avi", 20, 70)  # same name as a train clip, another clip
    full = write_video(root / "test/Sad/0002.avi", 60, 80).read_bytes()
    (root / "test/Sad/0002.avi").write_bytes(full[: len(full) * 2 // 5])  # announces 60 frames, has fewer
    (root / "test/Angry").mkdir()
    (root / "test/Angry/bad.avi").write_text("not a video")
    (root / "test/Angry/empty.avi").write_bytes(b"")
    (root / "test/Angry/readme.txt").write_text("ignored")
    return root


def test_parts_cover_the_video_in_about_two_second_pieces():
    assert parts(60, 10, 2) == [(0, 20), (20, 40), (40, 60)]
    assert parts(30, 10, 2) == [(0, 15), (15, 30)]
    assert parts(25, 10, 2) == [(0, 25)]
    assert parts(5, 10, 2) == [(0, 5)]  # a short clip still gives one frame
    assert parts(100, 25, 2) == [(0, 50), (50, 100)]
    v = Video("train", "Happy", "train/Happy/0001.avi", 60, 10.0)
    a, b = pick_frames(v, 2, seed=0), pick_frames(v, 2, seed=0)
    assert a == b and [p.part for p in a] == [0, 1, 2]
    assert all(s <= p.frame < e for p, (s, e) in zip(a, parts(60, 10, 2)))
    assert any(pick_frames(v, 2, seed=s) != a for s in range(1, 5))


def test_ncaer_build(caer, tmp_path, capsys):
    out = tmp_path / "NCAER-S"
    assert main(["prepare", "ncaer", str(caer), str(out), "--seed", "3", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "ncaer.json").read_text())
    assert set(report["unreadable"]) == {"test/Angry/bad.avi", "test/Angry/empty.avi"}
    assert "2 unreadable videos skipped" in printed and "glamor prepare detect" in printed
    assert [tuple(d) for d in report["duplicates"]] == [("train/Happy/0001.avi", "test/Happy/0001.avi")]

    layout = scan_root(out)  # the standard root layout, validation -> val
    files = [(e.split, e.label, e.path) for e in layout.images]
    counts = {s: Counter(label for split, label, _ in files if split == s) for s in ("train", "val", "test")}
    assert counts["train"] == {"Happy": 2, "Sad": 2}  # Happy had 3 frames: cut to Sad's 2
    assert counts["val"] == {"Happy": 1, "Sad": 1}
    assert len(set(counts["test"].values())) == 1  # balanced again after the short video lost frames
    assert report["lost"] and all("test/Sad/0002.avi" in why for why in report["lost"].values())
    assert report["candidates"]["test"] == {"Happy": 3, "Sad": 4}

    seen_parts = set()
    for split, label, rel in files:
        stem, frame = re.fullmatch(r".*/(\w+)_f(\d+)\.png", rel).groups()
        source = caer / {"val": "validation"}.get(split, split) / label / f"{stem}.avi"
        n = {
            "train/Happy/0002": 40,
            "train/Happy/0003": 25,
            "train/Sad/0001": 40,
            "val/Happy/0001": 20,
            "val/Sad/0001": 30,
            "test/Happy/0001": 60,
            "test/Sad/0001": 20,
            "test/Sad/0002": 60,
        }[f"{split}/{label}/{stem}"]
        part = [k for k, (a, b) in enumerate(parts(n, FPS, 2)) if a <= int(frame) < b]
        assert len(part) == 1 and (source, part[0]) not in seen_parts  # one frame per part
        seen_parts.add((source, part[0]))
        image = cv2.imread(str(out / rel))
        assert abs(image[16:40, 16:56].mean() - frame_value(int(frame))) < 2.5, rel  # the frame it says
    # no clip gives frames to two splits: the train copy of test/Happy/0001 gave nothing
    assert not any(rel.startswith("train/Happy/0001_") for _, _, rel in files)
    sources = {
        split: {
            caer.joinpath(*src.parts).read_bytes()
            for src, _ in seen_parts
            if src.relative_to(caer).parts[0] in (split, "validation" if split == "val" else split)
        }
        for split in ("train", "val", "test")
    }
    assert not (sources["train"] & sources["test"]) and not (sources["train"] & sources["val"])
    assert not (sources["val"] & sources["test"])


def test_rebuild_is_reproducible_and_a_different_plan_is_refused(caer, tmp_path):
    out = tmp_path / "out"
    first = build_ncaer(caer, out, seed=1, progress=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    again = build_ncaer(caer, out, seed=1, progress=False)
    # files already there are kept; only the surplus removed for balance is made (and removed) again
    assert again.written == first.removed and again.existing == first.written - first.removed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == files
    other = build_ncaer(caer, tmp_path / "other", seed=2, progress=False)
    assert sorted(p.relative_to(tmp_path / "other").as_posix() for p in (tmp_path / "other").rglob("*.png")) != files
    assert other.frames["val"] == {"Happy": 1, "Sad": 1}
    with pytest.raises(ValueError, match="images this build would not write"):
        build_ncaer(caer, out, seed=2, progress=False)


def test_unbalanced_keeps_every_part_and_bad_arguments_fail(caer, tmp_path):
    report = build_ncaer(caer, tmp_path / "all", balance=False, progress=False)
    assert report.frames["train"] == {"Happy": 3, "Sad": 2} and report.frames["val"] == {"Happy": 1, "Sad": 2}
    with pytest.raises(ValueError, match="segment_seconds"):
        build_ncaer(caer, tmp_path / "x", segment_seconds=0)
    with pytest.raises(FileNotFoundError):
        build_ncaer(tmp_path / "nowhere", tmp_path / "y")
