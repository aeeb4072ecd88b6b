"""Video building blocks on real files, without the model: frame sampling and times, truncated and
non-video files, smoothing against a hand computation, and the tracker's policy for a face that leaves."""

from __future__ import annotations

import numpy as np
import pytest
from video_clips import canvas, moving_face, write_video

from glamor_lightning.data.mtcnn import Detection
from glamor_lightning.data.ncaer import BadVideoError
from glamor_lightning.video.evaluate import clip_frames
from glamor_lightning.video.inputs import is_video_input, split_inputs
from glamor_lightning.video.reader import Sampling, VideoFrames
from glamor_lightning.video.smoothing import Smoothing, TrackSmoother
from glamor_lightning.video.tracking import FaceTracker


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames at 10 frames/s, 320x240."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", moving_face(12), fps=10)


def test_every_frame_with_its_container_time(clip):
    video = VideoFrames(clip)
    frames = list(video)
    assert (video.width, video.height, video.fps, video.frame_count) == (320, 240, 10.0, 12)
    assert [f.index for f in frames] == list(range(12))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert frames[0].rgb.shape == (240, 320, 3) and frames[0].rgb.dtype == np.uint8
    assert video.decoded == 12 and video.stopped is None


def test_variable_frame_rate_times_come_from_the_container(tmp_path):
    """Frames at irregular times (written with PyAV, which supervision brings): the reader reports the
    container's times, samples by them, and does not take the short frame count for a truncation."""
    av = pytest.importorskip("av")
    from fractions import Fraction

    times = [0.0, 0.1, 0.2, 0.7, 0.8, 1.5, 1.6]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(canvas([(40, 40)]), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = VideoFrames(path)
    assert [f.time_s for f in video] == pytest.approx(times)
    assert video.stopped is None  # the container announces 17 frames (1.7 s at 10/s), 7 exist
    assert [f.index for f in VideoFrames(path, Sampling(fps=2))] == [0, 3, 5]  # first at/after 0, 0.5, 1.0 s


@pytest.mark.parametrize(
    ("sampling", "indices"),
    [
        (Sampling(stride=5), [0, 5, 10]),
        (Sampling(fps=4), [0, 3, 5, 8, 10]),  # times 0, .3, .5, .8, 1.0: the first frame at or after each 0.25 s
        (Sampling(indices=(0, 5, 11)), [0, 5, 11]),
    ],
)
def test_sampling(clip, sampling, indices):
    assert [f.index for f in VideoFrames(clip, sampling)] == indices


def test_sampling_takes_one_rule():
    with pytest.raises(ValueError, match="one of stride, fps or indices"):
        Sampling(stride=2, fps=3)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        Sampling(stride=0)


def test_a_truncated_video_keeps_its_frames_and_says_where_it_stopped(clip, tmp_path):
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    video = VideoFrames(cut)
    frames = list(video)
    assert 0 < len(frames) < 12
    assert video.stopped.startswith(f"stopped at frame {len(frames)} ") and "of 12 announced" in video.stopped


@pytest.mark.parametrize("content", [b"", b"this is text, not a video\n" * 50])
def test_a_non_video_with_a_video_extension_is_named(tmp_path, content):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(content)
    with pytest.raises(BadVideoError, match="fake.mp4"):
        VideoFrames(fake)


def test_videos_are_recognised_by_extension_and_by_content(clip, tmp_path):
    bare = tmp_path / "recording"  # no extension: a video by content
    bare.write_bytes(clip.read_bytes())
    (tmp_path / "notes").write_text("not a video")
    (tmp_path / "a.png").write_bytes(b"")
    assert is_video_input(bare) and not is_video_input(tmp_path / "notes") and is_video_input(tmp_path / "x.avi")
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "b.avi", [canvas([])] * 2)
    images, videos = split_inputs([tmp_path, bare])
    assert [p.name for p in images] == ["a.png"] and [p.name for p in videos] == ["recording"]
    images, videos = split_inputs([tmp_path], recursive=True)
    assert [p.name for p in videos] == ["b.avi"]
    with pytest.raises(FileNotFoundError, match="missing.avi"):
        split_inputs([tmp_path / "missing.avi"])


def test_ema_smoothing_matches_a_hand_computation():
    p = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5])]
    s = TrackSmoother(Smoothing.parse("ema:0.25"))
    got = [s.update(7, x) for x in p]
    s1 = p[0]
    s2 = 0.25 * p[1] + 0.75 * s1  # [0.75, 0.25]
    s3 = 0.25 * p[2] + 0.75 * s2  # [0.6875, 0.3125]
    np.testing.assert_allclose(got, [s1, s2, s3])
    np.testing.assert_allclose(s.update(8, p[1]), p[1])  # another track starts afresh


def test_window_smoothing_and_off():
    s = TrackSmoother(Smoothing.parse("window:2"))
    got = [s.update(1, np.array([x, 1 - x])) for x in (1.0, 0.0, 0.5)]
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    off = TrackSmoother(Smoothing.parse("off"))
    np.testing.assert_allclose([off.update(1, np.array([x, 1 - x])) for x in (1.0, 0.0)], [[1, 0], [0, 1]])
    for bad in ("ema:0", "ema:1.5", "window:0", "median", "ema:x"):
        with pytest.raises(ValueError, match="smoothing|alpha|window"):
            Smoothing.parse(bad)


def _boxes(frames_with_face: list[bool], memory_s: float) -> list[list[int]]:
    tracker = FaceTracker(rate=10, memory_s=memory_s)
    face = Detection((100.0, 40.0, 150.0, 100.0), 0.99)
    return [[t for _, t in tracker.update([face] if seen else [])] for seen in frames_with_face]


def test_a_face_back_within_the_track_memory_keeps_its_id_after_it_gets_a_new_one():
    seen = [True] * 5 + [False] * 5 + [True] * 5  # 0.5 s away at 10 sampled frames/s
    assert _boxes(seen, memory_s=2.0) == [[1]] * 5 + [[]] * 5 + [[1]] * 5
    # memory 0.2 s (2 frames): a new track, reported from its second frame (ByteTrack confirms it then)
    assert _boxes(seen, memory_s=0.2) == [[1]] * 5 + [[]] * 5 + [[]] + [[2]] * 4


def test_clip_frames_spread_over_the_clip():
    assert clip_frames(100, 25, frames_per_clip=4, segment_seconds=None) == [12, 37, 62, 87]
    assert clip_frames(3, 25, frames_per_clip=10, segment_seconds=None) == [0, 1, 2]
    assert clip_frames(100, 25, frames_per_clip=None, segment_seconds=2.0) == [24, 74]  # 2 parts of 50
    with pytest.raises(ValueError, match="one of"):
        clip_frames(100, 25, None, None)
