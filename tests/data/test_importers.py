"""Importing face boxes: the authors' text-file tree and the public CAER-S annotation lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamor_lightning.cli import main
from glamor_lightning.data.importers import import_boxes, parse_box
from glamor_lightning.data.index import FaceRow, read_index, write_index


def make_root(root: Path) -> Path:
    for rel in (
        "train/Angry/0001.png",
        "train/Angry/0002.png",
        "train/Happy/0001.png",
        "test/Anger/0001.png",
        "test/Happy/0001.jpg",
        "test/Sad/0001.png",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"png")  # the importers never open the images
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_box():
    assert parse_box(["10", "20", "30", "40"]) == (10, 20, 30, 40)
    assert parse_box(["30", "40", "10", "20"]) == (10, 20, 30, 40)  # inverted corners put in order
    assert parse_box(["-5", "-2", "30", "40"]) == (-5, -2, 30, 40)  # partly outside: crops clip it
    assert parse_box(["0", "0", "0", "0"]) is None
    for bad in (["1", "2", "3"], ["a", "2", "3", "4"], ["5", "5", "5", "9"], ["1", "2", "nan", "4"]):
        with pytest.raises(ValueError):
            parse_box(bad)


def test_glamor_txt_tree(tmp_path):
    root = make_root(tmp_path / "root")
    boxes = tmp_path / "crop"
    write(boxes / "train/Angry/0001.txt", "10,20,50,60\n")
    write(boxes / "train/Angry/0002.txt", "0,0,0,0")
    write(boxes / "test/Anger/0001.txt", " 5, 6, 1, 2 ")  # inverted
    write(boxes / "test/Happy/0001.jpg.txt", "1,1,9,9")  # name with the image extension
    write(boxes / "test/Sad/0001.txt", "1,2,3")  # malformed
    write(boxes / "test/Sad/0099.txt", "1,2,3,4")  # no such image
    report = import_boxes(root, "glamor-txt", [boxes])
    rows = {r.path: r for r in read_index(root / "faces.csv")}
    assert rows["train/Angry/0001.png"] == FaceRow(
        "train", "train/Angry/0001.png", "Anger", (10, 20, 50, 60), None, "imported"
    )
    assert rows["train/Angry/0002.png"].source == "none" and rows["train/Angry/0002.png"].box is None
    assert rows["test/Anger/0001.png"].box == (1, 2, 5, 6)
    assert rows["test/Happy/0001.jpg"].box == (1, 1, 9, 9)
    assert set(rows) == {"train/Angry/0001.png", "train/Angry/0002.png", "test/Anger/0001.png", "test/Happy/0001.jpg"}
    assert (report.imported, report.no_face) == (4, 1)
    assert report.uncovered == ["train/Happy/0001.png", "test/Sad/0001.png"]
    assert len(report.problems) == 2
    assert any("0001.txt: expected 4 numbers" in p for p in report.problems)
    assert any("0099.txt: no image" in p for p in report.problems)
    assert "glamor prepare detect" in report.text(root)


def test_txt_tree_of_one_split_is_refused(tmp_path):
    root = make_root(tmp_path / "root")
    write(tmp_path / "crop/Angry/0001.txt", "1,2,3,4")
    with pytest.raises(ValueError, match="no train/, val/ or test/"):
        import_boxes(root, "glamor-txt", [tmp_path / "crop"])


def test_csv_lines_of_the_public_annotation_sets(tmp_path, capsys):
    root = make_root(tmp_path / "root")
    train = write(
        tmp_path / "train.txt",
        "relpath,label,x1,y1,x2,y2\n"
        "train/Angry/0001.png,0,278,110,363,195\n"
        "train/Anger/0002.png,Angry,1,2,30,40\n"  # Anger folder spelling, name label
        "train/Happy/0001.png,5,1,2,30,40\n"  # label Sad in a Happy folder
        "train/Happy/0404.png,3,1,2,30,40\n"  # missing image
        "train/Angry/0001.png,0,1,1,2,2\n"  # again with another box
        "\n",
    )
    test = write(
        tmp_path / "test.txt",
        "test/Anger/0001.png,0,0,0,0,0\ntest/Happy/0001.jpg,3,5,5,25,25\ntest/Sad/0001.png,Bored,5,5,25,25\n",
    )
    assert main(["prepare", "import", str(root), "--format", "csv", str(train), str(test)]) == 0
    out = capsys.readouterr().out
    rows = {r.path: r for r in read_index(root / "faces.csv")}
    assert set(rows) == {"train/Angry/0001.png", "train/Angry/0002.png", "test/Anger/0001.png", "test/Happy/0001.jpg"}
    assert rows["train/Angry/0001.png"].box == (278, 110, 363, 195)
    assert rows["test/Anger/0001.png"].source == "none"
    assert "4 problems" in out
    assert f"{train}:4: label '5' (Sad) disagrees with the folder of train/Happy/0001.png (Happy)" in out
    assert f"{train}:5: no image 'train/Happy/0404.png'" in out
    assert f"{train}:6: train/Angry/0001.png again with another box (kept the one from {train}:2)" in out
    assert f"{test}:3: Unknown class folder 'Bored'" in out
    assert "2 images have no box yet" in out


def test_import_keeps_earlier_rows_unless_replace(tmp_path):
    root = make_root(tmp_path / "root")
    write_index(
        root / "faces.csv",
        [
            FaceRow("test", "test/Sad/0001.png", "Sad", (1, 2, 3, 4), 0.99, "mtcnn"),
            FaceRow("train", "train/Angry/0001.png", "Anger", None, None, "none"),
        ],
    )
    ann = write(tmp_path / "a.csv", "train/Angry/0001.png,0,10,20,30,40\n")
    report = import_boxes(root, "csv", [ann])
    rows = {r.path: r for r in read_index(root / "faces.csv")}
    assert rows["train/Angry/0001.png"].source == "imported"  # the import wins for its images
    assert rows["test/Sad/0001.png"].source == "mtcnn" and report.kept == 1
    import_boxes(root, "csv", [ann], keep_existing=False)
    assert [r.path for r in read_index(root / "faces.csv")] == ["train/Angry/0001.png"]
