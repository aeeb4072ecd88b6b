"""SynthCAER: layout, determinism, and that the knobs change what is drawn."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.index import INDEX_NAME, SPLITS, read_index
from glamor_lightning.data.synth import PARAMS, SynthConfig, generate, render, sample_scene

SMALL = SynthConfig(per_class_train=3, per_class_val=1, per_class_test=2)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "a", SMALL, workers=1)


def test_layout_and_index(small_set: Path) -> None:
    rows = read_index(small_set / INDEX_NAME)
    pngs = {p.relative_to(small_set).as_posix() for p in small_set.rglob("*.png")}
    assert sorted(r.path for r in rows) == sorted(pngs)
    assert len(rows) == 7 * (3 + 1 + 2)
    assert {d.name for d in small_set.iterdir() if d.is_dir()} == set(SPLITS)
    counts = Counter((r.split, r.label) for r in rows)
    for split in SPLITS:
        assert {p.name for p in (small_set / split).iterdir()} == set(CLASSES)
        for label in CLASSES:
            assert counts[split, label] == SMALL.per_class(split)
    for r in rows:
        split, folder, _ = r.path.split("/")
        assert (split, folder) == (r.split, r.label)
        assert r.source == "synthetic" and r.score == 1.0
        with Image.open(small_set / r.path) as img:
            assert img.size == (SMALL.width, SMALL.height) and img.mode == "RGB"
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= SMALL.width and 0 <= y1 < y2 <= SMALL.height
        assert SMALL.face_px[0] - 1 <= y2 - y1 <= SMALL.face_px[1] + 1
    order = [(SPLITS.index(r.split), CLASSES.index(r.label), r.path) for r in rows]
    assert order == sorted(order)


def test_box_is_the_target_head_with_its_trait_colour(small_set: Path) -> None:
    """The tight box holds the target's hair/hat colour at its top, and a face in the middle."""
    for r in read_index(small_set / INDEX_NAME)[:10]:
        split, label, name = r.path.split("/")
        scene = sample_scene(SMALL, split, label, int(name[-8:-4]))
        assert scene.target.box == r.box
        px = np.asarray(Image.open(small_set / r.path)).astype(int)
        x1, y1, x2, y2 = (int(round(v)) for v in r.box)
        top = px[y1 + 1 : y1 + (y2 - y1) // 6, (x1 + x2) // 2]
        assert np.abs(top - scene.target.trait).sum(axis=1).min() < 30
        outside = px[max(y1 - 3, 0) : y1, x1:x2].reshape(-1, 3)  # just above the box: no trait colour
        assert outside.size == 0 or np.abs(outside - scene.target.trait).sum(axis=1).min() > 10


def test_same_seed_same_bytes_any_workers(small_set: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "b", SMALL, workers=2)
    assert _digests(again) == _digests(small_set)


def test_other_seed_other_images(small_set: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "c", dataclasses.replace(SMALL, seed=1), workers=1)
    a, b = _digests(small_set), _digests(other)
    assert a.keys() == b.keys()
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != b[k] for k in pngs) == len(pngs) == len(a) - 2  # all but faces.csv, synthcaer.json


def test_every_image_is_distinct(small_set: Path) -> None:
    """Split, class and index all feed the random stream: no two images (e.g. train/0 vs test/0) repeat."""
    digests = [d for k, d in _digests(small_set).items() if k.endswith(".png")]
    assert len(set(digests)) == len(digests) == 42


def test_companion_shares_trait_and_emotion_distractors_differ() -> None:
    cfg = SynthConfig(max_distractors=3)
    for i in range(30):
        label = CLASSES[i % 7]
        s = sample_scene(cfg, "train", label, i)
        comp = s.bystanders[s.companion]
        assert comp.trait == s.target.trait and comp.label == label and comp.intensity >= 0.7
        others = [p for k, p in enumerate(s.bystanders) if k != s.companion]
        assert all(p.trait != s.target.trait for p in others)
        assert len({p.trait for p in others}) == len(others)
        for p in s.bystanders:  # nobody covers the target's face box
            assert not _touches(p.box, s.target.box) and not _touches(p.body(), s.target.box)


def _touches(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_weak_fraction_is_respected() -> None:
    n = 700
    for frac in (0.0, 0.4, 1.0):
        cfg = SynthConfig(weak_fraction=frac)
        scenes = [sample_scene(cfg, "train", CLASSES[i % 7], i) for i in range(n)]
        weak = np.array([s.weak for s in scenes])
        assert abs(weak.mean() - frac) < 0.06
        lo, hi = cfg.weak_intensity
        assert all(lo <= s.target.intensity <= hi for s in np.array(scenes)[weak])


def test_weak_faces_are_closer_to_neutral() -> None:
    """A weak face's expression is near neutral; the same image index drawn strong is not."""
    weak, strong = SynthConfig(weak_fraction=1.0), SynthConfig(weak_fraction=0.0)
    for i in range(5):
        w, s = sample_scene(weak, "val", "Happy", i), sample_scene(strong, "val", "Happy", i)
        assert render(weak, w).tobytes() != render(strong, s).tobytes()
        curve = PARAMS.index("mouth_curve")
        assert abs(w.target.expression[curve]) < 0.4 < s.target.expression[curve]  # smiles only when strong
        assert abs(sample_scene(strong, "val", "Neutral", i).target.expression[curve]) < 0.3


def test_distractor_and_companion_knobs() -> None:
    none = SynthConfig(max_distractors=0)
    counts = [len(sample_scene(none, "test", "Fear", i).bystanders) for i in range(40)]
    assert counts == [1] * 40
    many = SynthConfig(max_distractors=3)
    counts = Counter(len(sample_scene(many, "test", "Fear", i).bystanders) - 1 for i in range(200))
    assert set(counts) == {0, 1, 2, 3}
    alone = SynthConfig(max_distractors=0, companion=False)
    assert all(sample_scene(alone, "test", "Fear", i).bystanders == [] for i in range(10))
    assert sample_scene(alone, "test", "Fear", 0).companion is None


def test_index_written_last_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale faces.csv is removed before images are written, so a crash leaves no index behind."""
    import glamor_lightning.data.synth as synth

    out = tmp_path / "d"
    out.mkdir()
    (out / INDEX_NAME).write_text("stale")
    cfg = SynthConfig(per_class_train=1, per_class_val=0, per_class_test=0)
    original, calls = synth._make_one, []

    def failing(job):
        calls.append(job)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return original(job)

    monkeypatch.setattr(synth, "_make_one", failing)
    with pytest.raises(RuntimeError, match="boom"):
        generate(out, cfg, workers=1)
    assert not (out / INDEX_NAME).exists()
    monkeypatch.setattr(synth, "_make_one", original)
    generate(out, cfg, workers=1)
    assert len(read_index(out / INDEX_NAME)) == 7


def test_file_names_parse_back(small_set: Path) -> None:
    from glamor_lightning.data.synth import parse_file_name

    for r in read_index(small_set / INDEX_NAME):
        split, label, index = parse_file_name(r.path)
        assert (split, label) == (r.split, r.label) and r.path.endswith(f"_{index:04d}.png")
    for bad in ("test/Happy/test_sad_0001.png", "test/Joy/test_joy_0001.png", "photos/me.png"):
        with pytest.raises(ValueError, match="is not a SynthCAER file name"):
            parse_file_name(bad)
