"""The video section of `make bench`, run for real in its quick (smoke) form: figures present and positive."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `benchmarks/` is a folder of the repository, not of the package
    sys.path.insert(0, str(REPO))

from benchmarks import run  # noqa: E402


@pytest.mark.slow  # about 100 s on 2 busy cores: MTCNN on 640x360 frames with five faces
def test_quick_video_bench(tmp_path):
    out = tmp_path / "bench"
    assert run.main(["--quick", "--only", "video", "--out", str(out), "--repeats", "1"]) == 0
    doc = json.loads((out / "latest.json").read_text())
    video = doc["video"]
    assert video["frame_size"] == [640, 360] and set(video["clips"]) == {"1", "5"}
    for n, clip in video["clips"].items():
        assert min(clip["faces_found"]) == int(n)
        assert all(clip[k] > 0 for k in ("detect_fps", "classify_fps", "end_to_end_fps"))
    assert "## Video" in (out / "latest.md").read_text()
