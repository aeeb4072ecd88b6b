"""Scanning a CAER-S-style root: splits, class folders (Angry = Anger), extensions, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamor_lightning.cli import main
from glamor_lightning.data.classes import UnknownClassError
from glamor_lightning.data.layout import LayoutError, scan_root


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_scan_finds_images_with_labels_angry_and_anger_alike(tmp_path):
    touch(
        tmp_path,
        "train/Angry/0001.png",
        "train/Angry/0002.PNG",
        "train/Happy/a.JPG",
        "train/Happy/b.jpeg",
        "test/Anger/0001.png",
        "test/Surprise/x/deep.png",
        "validation/Sad/v.bmp",
        "train/Happy/notes.txt",
        "train/README",
        "faces.csv",
        ".cache/junk.png",
        "train/.DS_Store",
        "extra/Happy/z.png",
    )
    layout = scan_root(tmp_path)
    got = {(e.split, e.path, e.label) for e in layout.images}
    assert got == {
        ("train", "train/Angry/0001.png", "Anger"),
        ("train", "train/Angry/0002.PNG", "Anger"),
        ("train", "train/Happy/a.JPG", "Happy"),
        ("train", "train/Happy/b.jpeg", "Happy"),
        ("test", "test/Anger/0001.png", "Anger"),
        ("test", "test/Surprise/x/deep.png", "Surprise"),
        ("val", "validation/Sad/v.bmp", "Sad"),
    }
    assert [e.split for e in layout.images] == ["train"] * 4 + ["val"] + ["test"] * 2  # split order
    assert sorted(layout.ignored) == ["extra/", "train/Happy/notes.txt", "train/README"]
    counts = layout.counts()
    assert counts["train"]["Anger"] == 2 and counts["test"]["Anger"] == 1 and counts["val"]["Sad"] == 1
    text = layout.summary()
    assert "7 images" in text and "ignored 3" in text and "train/ has no images of" in text


def test_unknown_class_folder_is_an_error_naming_it(tmp_path):
    touch(tmp_path, "train/Happy/a.png", "train/Joyful/b.png")
    with pytest.raises(UnknownClassError, match="Joyful"):
        scan_root(tmp_path)


def test_root_without_split_folders_says_what_it_found(tmp_path):
    touch(tmp_path, "CAER-S/train/Happy/a.png")
    with pytest.raises(LayoutError, match="no train/.*found: CAER-S/"):
        scan_root(tmp_path)
    with pytest.raises(LayoutError, match="not a folder"):
        scan_root(tmp_path / "missing")


def test_scan_command_prints_the_summary(tmp_path, capsys):
    touch(tmp_path, "train/Angry/0001.png", "test/Anger/0001.png", "test/Happy/0001.png")
    assert main(["prepare", "scan", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert lines["train"] == ["1", "0", "0", "0", "0", "0", "0", "1"]
    assert lines["test"] == ["1", "0", "0", "1", "0", "0", "0", "2"]
    touch(tmp_path, "test/Bored/0001.png")
    assert main(["prepare", "scan", str(tmp_path)]) == 2
    assert "Bored" in capsys.readouterr().err
