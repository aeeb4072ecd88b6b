"""`glamor evaluate-videos` on a small CAER-shaped tree of written clips, and the main-person rule."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from video_clips import canvas, write_video

from glamor_lightning.analysis.predictions import read_predictions
from glamor_lightning.cli import main
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.video.stream import FrameResult, TrackedFace
from glamor_lightning.video.summary import VideoSummary


@pytest.fixture(scope="module")
def caer(tmp_path_factory):
    """CAER/test/{Angry,Happy,Sad}/000k.avi: still people (one or two), one clip without anyone; a train clip."""
    root = tmp_path_factory.mktemp("caer") / "CAER"
    one = [canvas([(120, 40)])] * 9
    two = [canvas([(20, 40), (200, 60)])] * 9
    late = [canvas([(20, 40)])] * 5 + [canvas([(20, 40), (200, 60)])] * 4  # the second person comes late
    write_video(root / "test" / "Angry" / "0001.avi", one, fps=10)
    write_video(root / "test" / "Angry" / "0002.avi", late, fps=10)
    write_video(root / "test" / "Happy" / "0001.avi", two, fps=10)
    write_video(root / "test" / "Sad" / "0001.avi", one, fps=10)
    write_video(root / "test" / "Sad" / "0002.avi", [canvas([])] * 9, fps=10)  # nobody
    write_video(root / "train" / "Happy" / "0001.avi", one, fps=10)
    return root


def test_evaluate_videos_matches_a_hand_aggregation_of_its_frames(tiny_ckpt, caer, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate-videos", "--ckpt", str(tiny_ckpt), str(caer), "--frames-per-clip", "3",
                 "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    preds = read_predictions(out / "predictions.csv")  # the file glamor compare reads
    assert preds.classes == CLASSES
    assert preds.paths == ["test/Angry/0001.avi", "test/Angry/0002.avi", "test/Happy/0001.avi", "test/Sad/0001.avi"]
    assert preds.true == ["Anger", "Anger", "Happy", "Sad"]
    with open(out / "frames.csv", newline="") as fh:
        frames = list(csv.DictReader(fh))
    by_clip = defaultdict(list)
    for r in frames:
        by_clip[r["path"]].append(r)
    assert {p: [int(r["frame"]) for r in rows] for p, rows in by_clip.items()} == {p: [1, 4, 7] for p in preds.paths}
    # the main person of Angry/0002 is the one seen on all three frames, not the one who comes late
    assert {r["track_id"] for r in by_clip["test/Angry/0002.avi"]} == {"1"}
    # by hand: the clip's probabilities are the mean of its main person's frames; the prediction their argmax
    correct = 0
    for i, path in enumerate(preds.paths):
        mean = np.mean([[float(r[f"prob_{c}"]) for c in CLASSES] for r in by_clip[path]], axis=0)
        np.testing.assert_allclose(preds.probs[i], mean, atol=2e-6)
        assert preds.predicted[i] == CLASSES[int(mean.argmax())]
        correct += preds.predicted[i] == preds.true[i]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 5 and summary["clips_with_face"] == 4
    assert summary["clip_accuracy"] == pytest.approx(correct / 5)  # the clip with nobody counts as wrong
    assert summary["notes"] == {"test/Sad/0002.avi": "no face in 3 sampled frames"}
    frame_right = sum(r["predicted"] == r["true"] for r in frames)
    assert summary["frame_accuracy"] == pytest.approx(frame_right / len(frames))
    assert f"clip accuracy {correct / 5:.4f} over 5 clips (1 without a face or unreadable" in printed
    sad = next(r for r in summary["per_class"] if r["class"] == "Sad")
    assert sad["samples"] == 2 and sad["correct"] == (preds.predicted[3] == "Sad")
    assert "Sad" in printed and "per class (clips):" in printed


def test_evaluate_videos_by_segments_and_an_unreadable_clip(tiny_ckpt, caer, tmp_path, capsys):
    root = tmp_path / "CAER"
    (root / "test" / "Happy").mkdir(parents=True)
    (root / "test" / "Happy" / "0001.avi").write_bytes((caer / "test" / "Happy" / "0001.avi").read_bytes())
    (root / "test" / "Happy" / "0002.avi").write_text("not a video")
    out = tmp_path / "eval"
    assert main(["evaluate-videos", "--ckpt", str(tiny_ckpt), str(root), "--segment-seconds", "0.3",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 2 and summary["clips_with_face"] == 1
    assert summary["notes"]["test/Happy/0002.avi"].startswith("unreadable:")
    with open(out / "frames.csv", newline="") as fh:
        assert [int(r["frame"]) for r in csv.DictReader(fh)] == [1, 4, 7]  # 3 parts of 3 frames (0.3 s at 10/s)


def test_evaluate_videos_needs_videos_in_the_split(tiny_ckpt, caer, capsys):
    assert main(["evaluate-videos", "--ckpt", str(tiny_ckpt), str(caer), "--split", "validation"]) == 2
    assert "no videos in the validation split" in capsys.readouterr().err


def face(track_id: int, score: float) -> TrackedFace:
    p = np.full(len(CLASSES), 1 / len(CLASSES))
    return TrackedFace(track_id, (0.0, 0.0, 10.0, 10.0), score, p, p, CLASSES)


def test_the_main_person_is_the_longest_track_ties_by_score_then_id():
    rgb = np.zeros((2, 2, 3), np.uint8)
    s = VideoSummary(CLASSES)
    s.add(FrameResult(0, 0.0, rgb, [face(1, 0.95), face(2, 0.99), face(3, 0.99)]))
    s.add(FrameResult(1, 0.1, rgb, [face(1, 0.95), face(2, 0.99), face(3, 0.99)]))
    assert s.main_track().track_id == 2  # 2 and 3 tie on frames and score: the smaller id
    s.add(FrameResult(2, 0.2, rgb, [face(1, 0.95)]))
    assert s.main_track().track_id == 1  # the longest
