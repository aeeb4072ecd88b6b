"""Faces tracked through real videos (the astronaut moved over real photos) with a real checkpoint, and the
files `glamor predict` writes for videos."""

from __future__ import annotations

import csv
import json
import tracemalloc

import cv2
import numpy as np
import pytest
from video_clips import canvas, leaves_and_returns, write_video

from glamor_lightning.cli import main
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.predict import Predictor
from glamor_lightning.video.stream import VideoStream


@pytest.fixture(scope="module")
def predictor(tiny_ckpt):
    return Predictor.from_checkpoint(tiny_ckpt, device="cpu", threshold=0.9)


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    """Two people walking past each other: one moves right, the other left, the second passing in front."""
    frames = [canvas([(10 + 12 * i, 40), (230 - 12 * i, 40)]) for i in range(18)]
    return write_video(tmp_path_factory.mktemp("crossing") / "crossing.avi", frames, fps=10)


def centre_x(face) -> float:
    return (face.box[0] + face.box[2]) / 2


def test_two_people_crossing_keep_their_ids(predictor, crossing):
    results = list(predictor.predict_video(crossing, batch_frames=4))
    assert [r.index for r in results] == list(range(18))
    assert [len(r.faces) for r in results[:7]] == [2] * 7 and [len(r.faces) for r in results[-6:]] == [2] * 6
    for r in results:
        by_id = {f.track_id: centre_x(f) for f in r.faces}
        assert set(by_id) <= {1, 2}  # nobody gets a third id, not even after being hidden behind the other
        if 1 in by_id:  # track 1 is the one walking right: x = 10 + 12 i (+ the face's offset in the head)
            assert by_id[1] == pytest.approx(10 + 12 * r.index + 40, abs=15)
        if 2 in by_id:
            assert by_id[2] == pytest.approx(230 - 12 * r.index + 40, abs=15)
    face = results[0].faces[0]
    assert face.probs.shape == (len(CLASSES),) and face.probs.sum() == pytest.approx(1.0)
    assert face.label in CLASSES and face.probability == pytest.approx(face.probs.max())


def test_each_face_is_classified_with_its_own_context_in_the_batch(predictor, crossing):
    """The stream's raw probabilities of a frame equal the photo path's (`Predictor.classify`) on the same boxes."""
    first = next(iter(predictor.predict_video(crossing, smoothing="off")))
    photo = predictor.classify(first.rgb, [f.box for f in first.faces])
    for f, p in zip(first.faces, photo):
        np.testing.assert_allclose(f.raw, [p.probabilities[c] for c in CLASSES], atol=1e-5)


def test_a_face_that_leaves_and_comes_back(predictor, tmp_path):
    path = write_video(tmp_path / "away.avi", leaves_and_returns(before=5, away=5, after=5), fps=10)
    ids = [[f.track_id for f in r.faces] for r in predictor.predict_video(path, memory_s=2.0)]
    assert ids == [[1]] * 5 + [[]] * 5 + [[1]] * 5  # 0.5 s away < 2 s memory: the same id
    ids = [[f.track_id for f in r.faces] for r in predictor.predict_video(path, memory_s=0.1)]
    assert ids == [[1]] * 5 + [[]] * 5 + [[]] + [[2]] * 4  # a new id, confirmed on its second frame


def test_portrait_video(predictor, tmp_path):
    frames = [canvas([(40, 60 + 10 * i)], size=(180, 320)) for i in range(6)]
    path = write_video(tmp_path / "portrait.avi", frames, fps=10)
    results = list(predictor.predict_video(path))
    assert results[0].rgb.shape == (320, 180, 3)
    assert [[f.track_id for f in r.faces] for r in results] == [[1]] * 6
    assert [f.box[1] for r in results for f in r.faces] == sorted(f.box[1] for r in results for f in r.faces)


def peak_bytes(predictor, path) -> tuple[int, int]:
    """(sampled frames, peak bytes numpy and Python allocated) of streaming one video, batches of 2 frames."""
    tracemalloc.start()
    try:
        n = sum(1 for _ in VideoStream(predictor, path, batch_frames=2))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_video(predictor, tmp_path):
    """A video 4 times longer streams within the same memory: frames are not kept."""
    frames = [canvas([(100, 60)])] * 6  # a still scene: MTCNN's cost is the same per frame
    short = write_video(tmp_path / "short.avi", frames, fps=25)
    long = write_video(tmp_path / "long.avi", frames * 4, fps=25)
    quick = Predictor(predictor.module, threshold=0.9, min_face_size=40)  # a smaller MTCNN pyramid: faster
    next(iter(VideoStream(quick, short)))  # imports and first allocations, before measuring
    n_short, peak_short = peak_bytes(quick, short)
    n_long, peak_long = peak_bytes(quick, long)
    frame_bytes = 320 * 240 * 3
    assert (n_short, n_long) == (6, 24)
    assert peak_long < peak_short + 2 * frame_bytes, f"{peak_short / 1e6:.1f} MB, then {peak_long / 1e6:.1f} MB"
    assert peak_long < 16 * frame_bytes  # below the 24 frames' 5.5 MB as RGB


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_glamor_predict_writes_csv_json_and_annotated_video(tiny_ckpt, crossing, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(crossing), "--out", str(out), "--stride", "2",
                 "--smoothing", "ema:0.3", "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "crossing.avi: 9 frames sampled" in printed and "2 track(s)" in printed
    rows = read_csv(out / "crossing.csv")
    probs = [f"prob_{c}" for c in CLASSES]
    assert list(rows[0]) == [
        *("frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "score", "label", "probability"),
        *probs,
        "raw_label",
        "raw_probability",
        *(f"raw_{p}" for p in probs),
    ]
    assert sorted({int(r["frame"]) for r in rows}) == list(range(0, 18, 2))
    assert sorted({float(r["time_s"]) for r in rows}) == pytest.approx([i / 10 for i in range(0, 18, 2)])
    # the smoothed columns are the EMA (alpha 0.3) of each track's raw columns, computed here by hand
    for track in ("1", "2"):
        mine = [r for r in rows if r["track_id"] == track]
        ema = None
        for r in mine:
            raw = np.array([float(r[f"raw_{p}"]) for p in probs])
            ema = raw if ema is None else 0.3 * raw + 0.7 * ema
            np.testing.assert_allclose([float(r[p]) for p in probs], ema, atol=2e-6)
            assert r["label"] == CLASSES[int(ema.argmax())]
    record = json.loads((out / "crossing.json").read_text())
    summary = record["summary"]
    assert record["sampled_fps"] == 5.0 and record["smoothing"] == "ema:0.3" and record["stopped"] is None
    assert record["threshold"] == 0.9 and record["min_face_size"] == 20 and record["detect_max_side"] == 480
    assert summary["frames_sampled"] == 9 and [t["track_id"] for t in summary["tracks"]] == [1, 2]
    for t in summary["tracks"]:
        mine = [r for r in rows if r["track_id"] == str(t["track_id"])]
        assert t["frames_seen"] == len(mine)
        assert t["first_time_s"] == pytest.approx(float(mine[0]["time_s"]))
        assert t["last_time_s"] == pytest.approx(float(mine[-1]["time_s"]))
        mean = {c: np.mean([float(r[f"raw_prob_{c}"]) for r in mine]) for c in CLASSES}
        assert t["mean_probabilities"] == pytest.approx(mean, abs=2e-6)
        labels = [r["label"] for r in mine]
        assert t["dominant_share"] == pytest.approx(labels.count(t["dominant_emotion"]) / len(mine))
        assert labels.count(t["dominant_emotion"]) == max(labels.count(x) for x in labels)
    labels = [r["label"] for r in rows]
    assert labels.count(summary["dominant_emotion"]) == max(labels.count(x) for x in labels)
    video = cv2.VideoCapture(str(out / "crossing_annotated.mp4"))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 9
    ok, first = video.read()
    video.release()
    assert ok and first.shape == (240, 320, 3)


def test_smoothing_off_has_no_raw_columns(tiny_ckpt, crossing, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(crossing), "--out", str(out), "--fps", "5",
                 "--smoothing", "off", "--no-progress"]) == 0  # fmt: skip
    rows = read_csv(out / "crossing.csv")
    assert not any(k.startswith("raw_") for k in rows[0])
    assert sorted({int(r["frame"]) for r in rows}) == list(range(0, 18, 2))  # 5 of the video's 10 frames/s


def test_bad_truncated_and_faceless_videos_beside_good_inputs(tiny_ckpt, crossing, tmp_path, capsys):
    from real_photos import scene, write_image

    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n" * 100)
    data = crossing.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    empty_room = write_video(tmp_path / "empty.avi", [canvas([])] * 5, fps=10)
    photo = write_image(tmp_path / "photo.png", scene(size=(240, 160), head_px=80))
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(tiny_ckpt), str(fake), str(cut), str(empty_room), str(photo),
                 "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 1  # one unreadable input
    captured = capsys.readouterr()
    assert f"{fake}: skipped: {fake}: not a video OpenCV can open" in captured.err
    assert "1 image(s) and 2 video(s) predicted, 1 unreadable" in captured.out
    assert json.loads((out / "fake.json").read_text())["error"].startswith(str(fake))
    assert not (out / "fake.csv").exists()
    cut_record = json.loads((out / "cut.json").read_text())
    decoded = cut_record["frames_decoded"]
    assert 0 < decoded < 18 and cut_record["summary"]["frames_sampled"] == decoded
    assert cut_record["stopped"].startswith(f"stopped at frame {decoded} ") and "stopped at frame" in captured.out
    assert {int(r["frame"]) for r in read_csv(out / "cut.csv")} == set(range(decoded))
    empty = json.loads((out / "empty.json").read_text())
    assert empty["summary"]["tracks"] == [] and empty["summary"]["dominant_emotion"] is None
    assert empty["message"].startswith("no face: none tracked in 5 sampled frames")
    assert read_csv(out / "empty.csv") == [] and (out / "empty_annotated.mp4").stat().st_size > 0
    assert json.loads((out / "photo.json").read_text())["faces"]
