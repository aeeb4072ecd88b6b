"""What `glamor predict` (and its neighbours) do with awkward inputs: images too small to hold a face,
and arguments out of range — one clear line each, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from glamor_lightning.cli import main
from glamor_lightning.data.mtcnn import FaceDetector
from glamor_lightning.predict import DETECT_MAX_SIDE


def astronaut() -> np.ndarray:
    """A real photo with one face (scikit-image's astronaut, 512 x 512)."""
    return np.ascontiguousarray(skdata.astronaut())


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)), path


def test_images_smaller_than_min_face_size_have_no_face_and_the_others_are_detected():
    """MTCNN's image pyramid starts at min_face_size → 12 px: an image whose shorter side is below
    min_face_size has no scale at all, and facenet-pytorch fails on it (torch.cat of an empty list)."""
    detector = FaceDetector(min_face_size=20)
    tiny = np.ascontiguousarray(astronaut()[60:75, 180:240])  # 15 x 60 pixels
    assert detector.detect([tiny]) == [[]]
    assert detector.detect([tiny, tiny]) == [[], []]  # one same-size batch of tiny images
    found = detector.detect([tiny, np.ascontiguousarray(astronaut())])
    assert found[0] == [] and len(found[1]) == 1
    # exactly min_face_size is on the edge: 47 * (12 / 47) < 12 in floating point, so MTCNN has no scale
    edge = np.ascontiguousarray(astronaut()[:47, :60])
    assert FaceDetector(min_face_size=47).detect([edge]) == [[]]


def test_predict_writes_no_face_for_a_too_small_image_and_goes_on(tiny_ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "astronaut.png", astronaut())
    write_image(photos / "tiny.png", astronaut()[60:75, 180:240])  # 15 x 60: below --min-face-size 20
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(photos), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    tiny = json.loads((out / "tiny.json").read_text())
    assert tiny["faces"] == [] and tiny["width"] == 60 and tiny["height"] == 15
    assert "smaller than" in tiny["message"] and "--min-face-size 20" in tiny["message"]
    assert "tiny.png: no face" in printed and "2 image(s) predicted" in printed
    assert len(json.loads((out / "astronaut.json").read_text())["faces"]) == 1


def test_a_strip_too_thin_once_bounded_says_so_and_names_the_bound(tiny_ckpt, tmp_path):
    photos = tmp_path / "photos"
    strip = cv2.resize(astronaut(), (2048, 30), interpolation=cv2.INTER_AREA)  # too thin once shrunk
    write_image(photos / "strip.png", strip)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(photos), "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "strip.json").read_text())
    side, thin = DETECT_MAX_SIDE, round(30 * DETECT_MAX_SIDE / 2048)
    assert record["detect_max_side"] == side and record["faces"] == [] and thin < 20
    assert f"searched at {side}x{thin} (--detect-max-side {side})" in record["message"]
    assert "--detect-max-side 0" in record["message"]


@pytest.mark.parametrize(
    "argv, argument, problem",
    [
        (["predict", "p.jpg", "--threshold", "0"], "--threshold", "in (0, 1]"),
        (["predict", "p.jpg", "--threshold", "1.5"], "--threshold", "in (0, 1]"),
        (["predict", "p.jpg", "--threshold", "-0.2"], "--threshold", "in (0, 1]"),
        (["predict", "p.jpg", "--threshold", "nan"], "--threshold", "in (0, 1]"),
        (["predict", "p.jpg", "--threshold", "high"], "--threshold", "in (0, 1]"),
        (["predict", "p.jpg", "--min-face-size", "0"], "--min-face-size", "at least 1"),
        (["predict", "p.jpg", "--min-face-size", "-5"], "--min-face-size", "at least 1"),
        (["attention", "--n", "0"], "--n", "at least 1"),
        (["attention", "--n", "-3"], "--n", "at least 1"),
    ],
)
def test_out_of_range_arguments_are_one_line_errors(argv, argument, problem, tmp_path, capsys):
    argv = [argv[0], "--ckpt", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "out"), *argv[1:]]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"glamor {argv[0]}: error: argument {argument}: ") and problem in last
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, out_kind", [("predict", "file"), ("attention", "file"), ("export", "folder")])
def test_out_naming_the_wrong_kind_of_path_is_a_one_line_error(command, out_kind, tmp_path, capsys):
    out = tmp_path / "taken"
    if out_kind == "file":
        out.write_text("already here")
    else:
        out.mkdir()
    argv = [command, "--ckpt", str(tmp_path / "m.ckpt"), "--out", str(out)] + (
        ["p.jpg"] if command == "predict" else []
    )
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"glamor {command}: error: argument --out: {out} is ")
    assert ("an existing file, not a folder" if out_kind == "file" else "a folder, not a file") in last
    if out_kind == "file":
        assert out.read_text() == "already here"


def test_detector_settings_out_of_range_are_value_errors():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        FaceDetector(threshold=1.5)
    with pytest.raises(ValueError, match="min_face_size must be at least 1 pixel, got 0"):
        FaceDetector(min_face_size=0)
