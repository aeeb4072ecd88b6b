"""Face detection at a bounded resolution (`FaceDetector(max_side=...)`, `glamor predict --detect-max-side`):
a large photo is searched as a shrunk copy and its boxes mapped back to the photo's pixels. Real photos
(scikit-image's astronaut pasted on real backgrounds) and real MTCNN throughout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_clips import write_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from glamor_lightning.cli import main  # noqa: E402
from glamor_lightning.data.mtcnn import FaceDetector  # noqa: E402
from glamor_lightning.predict import DETECT_MAX_SIDE, VIDEO_DETECT_MAX_SIDE, Predictor  # noqa: E402
from real_photos import astronaut, scene, write_image  # noqa: E402

BOUND = 640
TILE = 256


def faces_photo(n_faces: int) -> np.ndarray:
    """A 1024×512 photo with `n_faces` astronaut tiles (of 8 places) on grey, as benchmarks/detection.py's."""
    tile = astronaut()[10 : 10 + TILE, 96 : 96 + TILE]
    photo = np.full((2 * TILE, 4 * TILE, 3), 128, np.uint8)
    for k in range(n_faces):
        r, c = divmod(k, 4)
        photo[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
    return photo


def big_and_small_heads() -> np.ndarray:
    """1920×1080: a 150-px head (found either way) and a 40-px one, whose face (about 22 px wide) is found at
    full resolution but is 7 px in the 640-px copy, far below min_face_size 20. (MTCNN's min_face_size is
    soft: at a third of its size a face can still be found, e.g. 9 of 20 px in a JPEG frame.)"""
    image = scene("coffee", (1920, 1080), head_px=150, at=(100, 100))
    small = scene("coffee", (1920, 1080), head_px=40, at=(1400, 600))
    image[600:660, 1400:1440] = small[600:660, 1400:1440]
    return image


@pytest.fixture(scope="module")
def full():
    return FaceDetector()


@pytest.fixture(scope="module")
def bounded():
    return FaceDetector(max_side=BOUND)


def assert_same_faces(found, expected, tol: float) -> None:
    """The same number of faces, and each expected box has a found box with every edge within `tol` pixels."""
    assert len(found) == len(expected), ([d.box for d in found], [d.box for d in expected])
    for e in expected:
        nearest = min(found, key=lambda d: np.abs(np.subtract(d.box, e.box)).max())
        assert np.abs(np.subtract(nearest.box, e.box)).max() <= tol, (nearest.box, e.box)


@pytest.fixture(scope="module")
def by_default():
    return FaceDetector(max_side=DETECT_MAX_SIDE)


@pytest.mark.parametrize("mirror", [False, True], ids=["head", "mirrored"])
@pytest.mark.parametrize("bg, at", [("coffee", (100, 100)), ("rocket", (900, 400)), ("cat", (500, 300))])
def test_the_default_bound_keeps_every_box_within_8_px_of_full_resolution(full, by_default, bg, at, mirror):
    """What `glamor predict` finds by default (DETECT_MAX_SIDE) on real photos, against full resolution."""
    image = scene(bg, (1280, 720), head_px=150, at=at, mirror=mirror)
    expected = full.detect([image])[0]
    assert len(expected) == 1
    assert_same_faces(by_default.detect([image])[0], expected, tol=8)


@pytest.mark.parametrize("n_faces", [1, 5, 8])
def test_the_default_bound_finds_every_tiled_face(full, by_default, n_faces):
    photo = faces_photo(n_faces)  # the photos of `make bench`'s latency figures
    expected = full.detect([photo])[0]
    assert len(expected) == n_faces
    assert_same_faces(by_default.detect([photo])[0], expected, tol=8)


def test_the_mirrored_head_is_found_with_a_less_stable_top_edge(full, bounded):
    """On the mirrored head MTCNN's top edge depends more on the scale searched: 12 px higher (of a 115-px
    box) at full resolution here. Over 30 placements of the head (3 backgrounds, 5 places, mirrored or
    not), the other edges moved at most 6 px, the top edge at most 6 px but on 3 mirrored ones (8.6, 8.6
    and 12.4 px): MTCNN's own scale jitter, not the mapping back (which would shift every edge alike)."""
    image = scene("rocket", (1280, 720), head_px=150, at=(100, 100), mirror=True)
    (expected,) = full.detect([image])[0]
    (found,) = bounded.detect([image])[0]
    edges = np.abs(np.subtract(found.box, expected.box))
    assert edges[[0, 2, 3]].max() <= 8 and edges[1] <= 14


def test_boxes_are_mapped_back_to_the_original_pixels(full):
    """The same photo at 2× under a bound of the small one's longest side: MTCNN searches (nearly) the
    small photo again, and the boxes come back twice as large, in the large photo's pixels."""
    small = scene("coffee", (480, 320), head_px=100, at=(150, 80))
    large = cv2.resize(small, (960, 640), interpolation=cv2.INTER_CUBIC)
    (face,) = full.detect([small])[0]
    (mapped,) = FaceDetector(max_side=480).detect([large])[0]
    np.testing.assert_allclose(mapped.box, 2 * np.array(face.box), atol=4)


def test_x_and_y_are_scaled_by_their_own_ratio(full):
    """1279×721 is searched at 640×361 (ratios 1279/640 and 721/361): the boxes are exactly those MTCNN
    finds in that copy, x scaled by the one ratio and y by the other."""
    image = scene("rocket", (1279, 721), head_px=150, at=(700, 300))
    bounded = FaceDetector(max_side=BOUND)
    assert bounded.searched_size(721, 1279) == (361, 640)
    copy = cv2.resize(image, (640, 361), interpolation=cv2.INTER_AREA)
    (in_copy,) = full.detect([copy])[0]
    (mapped,) = bounded.detect([image])[0]
    ratios = np.array([1279 / 640, 721 / 361, 1279 / 640, 721 / 361])
    np.testing.assert_allclose(mapped.box, np.array(in_copy.box) * ratios, rtol=0, atol=1e-6)
    assert mapped.score == in_copy.score
    assert_same_faces([mapped], full.detect([image])[0], tol=8)  # and on the face of the original


@pytest.mark.parametrize("size", [(512, 512), (640, 360), (360, 640)])
def test_an_image_within_the_bound_is_searched_as_it_is(full, bounded, size):
    image = np.ascontiguousarray(astronaut()) if size == (512, 512) else scene("cat", size, head_px=120, at=(60, 40))
    assert bounded.searched_size(*image.shape[:2]) == image.shape[:2]
    assert bounded.detect([image]) == full.detect([image])  # exactly: same boxes, same scores


def test_the_smallest_face_found_grows_by_the_downscale_ratio(full, bounded):
    assert bounded.smallest_face(720, 1280) == pytest.approx(40.0)  # 20 px of the 640×360 copy
    assert bounded.smallest_face(1080, 1920) == pytest.approx(60.0)
    assert bounded.smallest_face(512, 512) == 20 and full.smallest_face(1080, 1920) == 20
    image = big_and_small_heads()
    assert len(full.detect([image])[0]) == 2
    (found,) = bounded.detect([image])[0]  # the 40-px head's face is too small for the shrunk copy
    assert found.box[0] < 400


def test_searchable_uses_the_searched_size(full, bounded):
    strip = np.ascontiguousarray(np.tile(astronaut()[:30], (1, 4, 1)))  # 2048×30 → 640×9 searched
    assert full.searchable(strip) and not bounded.searchable(strip)
    assert bounded.detect([strip]) == [[]]


def test_images_of_one_searched_shape_go_in_one_batch(bounded, monkeypatch):
    """1280×720 and 1284×722 both shrink to 640×360: one MTCNN call for both, each box mapped back by its
    own image's ratio (as detected alone)."""
    a = scene("coffee", (1280, 720), head_px=150, at=(100, 100))
    b = scene("rocket", (1284, 722), head_px=150, at=(900, 400))
    alone = [bounded.detect([a])[0], bounded.detect([b])[0]]
    calls = []
    detect = bounded.mtcnn.detect
    monkeypatch.setattr(bounded.mtcnn, "detect", lambda batch: calls.append(len(batch)) or detect(batch))
    together = bounded.detect([a, b])
    assert calls == [2]
    for got, want in zip(together, alone):
        assert len(got) == len(want) == 1
        np.testing.assert_allclose(got[0].box, want[0].box, atol=0.05)


@pytest.mark.parametrize("max_side", [0, 11, 19])
def test_a_max_side_too_small_for_a_face_is_a_value_error(max_side):
    with pytest.raises(
        ValueError, match=rf"^MTCNN max_side must be at least min_face_size \(20\) and 12 pixels, got {max_side}"
    ):
        FaceDetector(max_side=max_side)
    FaceDetector(min_face_size=12, max_side=12)  # the smallest bound: one P-Net window


def test_the_predictor_passes_its_bound_to_the_detector(tiny_ckpt):
    assert Predictor.from_checkpoint(tiny_ckpt).detect_max_side == DETECT_MAX_SIDE
    assert Predictor.from_checkpoint(tiny_ckpt, detect_max_side=800).detector.max_side == 800
    assert Predictor.from_checkpoint(tiny_ckpt, detect_max_side=0).detect_max_side is None  # full resolution
    assert Predictor.from_checkpoint(tiny_ckpt).video_detect_max_side == VIDEO_DETECT_MAX_SIDE
    videos = Predictor.from_checkpoint(tiny_ckpt, video_detect_max_side=320)
    assert videos.video_detector.max_side == 320 and videos.detect_max_side == DETECT_MAX_SIDE
    assert videos.video_detector.mtcnn is videos.detector.mtcnn  # one MTCNN, two bounds
    with pytest.raises(ValueError, match="max_side must be at least min_face_size"):
        Predictor.from_checkpoint(tiny_ckpt, video_detect_max_side=10)
    predictor = Predictor.from_checkpoint(tiny_ckpt, detect_max_side=None)
    image = big_and_small_heads()
    assert len(predictor.predict(image)) == 2


def test_the_cli_flag_reaches_the_detector(tiny_ckpt, full, tmp_path, capsys):
    """Default: DETECT_MAX_SIDE (the boxes of a detector with that bound); 0: full resolution (the boxes of an
    unbounded one). At the default the 40-px head of the 1920×1080 photo is only found at full resolution."""
    image = big_and_small_heads()
    write_image(tmp_path / "in" / "scene.png", image)
    boxes = {}
    for flag in ([], ["--detect-max-side", "0"]):
        out = tmp_path / f"out{len(flag)}"
        argv = ["predict", "--ckpt", str(tiny_ckpt), str(tmp_path / "in"), "--out", str(out), "--device", "cpu", *flag]
        assert main(argv) == 0
        boxes[bool(flag)] = [f["box"] for f in json.loads((out / "scene.json").read_text())["faces"]]
    capsys.readouterr()
    by_default = FaceDetector(max_side=DETECT_MAX_SIDE).detect([image])[0]
    assert boxes[False] == [[round(v, 2) for v in d.box] for d in by_default]
    assert boxes[True] == [[round(v, 2) for v in d.box] for d in full.detect([image])[0]]
    assert boxes[False] != boxes[True]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--detect-max-side", "5"], "glamor predict: error: argument --detect-max-side: must be 0 (full resolution)"),
        (
            ["--detect-max-side", "big"],
            "glamor predict: error: argument --detect-max-side: must be 0 (full resolution)",
        ),
        (
            ["--detect-max-side", "16", "--min-face-size", "20"],
            "glamor: error: --detect-max-side 16 is below --min-face-size 20",
        ),
    ],
)
def test_a_bad_detect_max_side_is_a_one_line_error(flags, message, tmp_path, capsys):
    argv = ["predict", "--ckpt", str(tmp_path / "m.ckpt"), "p.jpg", "--out", str(tmp_path / "out"), *flags]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    assert not (tmp_path / "out").exists()


def test_videos_get_the_bound_too(tiny_ckpt, tmp_path):
    """Videos use the predictor's video detector: its frames are searched under VIDEO_DETECT_MAX_SIDE."""
    frame = big_and_small_heads()
    path = write_video(tmp_path / "scene.avi", [frame] * 2, fps=10)
    for max_side, n_faces in ((VIDEO_DETECT_MAX_SIDE, 1), (0, 2)):
        predictor = Predictor.from_checkpoint(tiny_ckpt, video_detect_max_side=max_side)
        results = list(predictor.predict_video(path))
        assert [len(r.faces) for r in results] == [n_faces] * 2, max_side
