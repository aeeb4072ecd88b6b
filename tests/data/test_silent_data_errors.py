"""Data mistakes that used to pass silently: each is now either handled right or a clear error."""

from __future__ import annotations

import os
import shutil
import signal
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glamor_lightning.cli import main
from glamor_lightning.data.cache import CacheSpec, cache_path, ensure_cache
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.geometry import face_crop
from glamor_lightning.data.index import FaceRow, read_index, write_index
from glamor_lightning.data.splits import check_folders
from real_photos import write_image

LAYOUT = "ROOT/{train,val,test}/<Class>/<image>"


def noise(seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def make_root(root: Path, per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A root of noise PNGs in Happy/ and Sad/ folders, with faces.csv; `seed` picks the pixels."""
    rows = []
    for split, n in (per_split or {"train": 4, "val": 2, "test": 2}).items():
        for i in range(n):
            label = ("Happy", "Sad")[i % 2]
            rel = f"{split}/{label}/{i:03d}.png"
            write_image(root / rel, noise(zlib.crc32(f"{seed}/{rel}".encode())))
            rows.append(FaceRow(split, rel, label, (8.0, 8.0, 40.0, 40.0), 1.0, "mtcnn"))
    write_index(root / "faces.csv", rows)
    return root


def dm_of(root: Path, cache_dir: Path | None = None, **kw) -> EmotionDataModule:
    return EmotionDataModule(
        str(root), batch_size=2, cache_workers=0, cache_dir=str(cache_dir or root.parent / f"cache-{root.name}"), **kw
    )


# -- 1. the packed cache belongs to one root and to the images as they are -----------------------------
def test_two_roots_with_the_same_faces_csv_sharing_a_cache_dir_get_their_own_pixels(tmp_path):
    shared = tmp_path / "shared-cache"
    first = make_root(tmp_path / "CAER-S", seed=1)
    second = make_root(tmp_path / "CAER-S-perturbed", seed=2)
    assert (first / "faces.csv").read_bytes() == (second / "faces.csv").read_bytes()
    dms = [dm_of(root, shared) for root in (first, second)]
    for dm in dms:
        dm.setup("fit")
    assert dms[0].cache.path != dms[1].cache.path
    for root, dm in zip((first, second), dms):
        for i, row in enumerate(dm.rows):
            want = face_crop(np.asarray(Image.open(root / row.path).convert("RGB")), row.box)
            assert np.array_equal(np.asarray(dm.cache.faces[i]), want), (root, row.path)


def test_a_touched_or_replaced_image_makes_a_new_cache(tmp_path):
    root = make_root(tmp_path / "root")
    rows = read_index(root / "faces.csv")
    before = ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert ensure_cache(root, rows, CacheSpec(), workers=0, progress=False).path == before.path  # reused
    image = root / rows[0].path
    # replaced by other pixels: new cache with the new pixels
    write_image(image, noise(99))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    replaced = ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert replaced.path != before.path
    assert np.array_equal(np.asarray(replaced.faces[0]), face_crop(noise(99), rows[0].box))
    # only touched (same bytes, new mtime): a new cache too
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert cache_path(root, CacheSpec()) not in (before.path, replaced.path)
    # a missing image still gives a cache that names it as unreadable
    image.unlink()
    missing = ensure_cache(root, rows, CacheSpec(), workers=0, progress=False)
    assert list(missing.errors) == [rows[0].path] and not missing.ok[0] and missing.ok[1:].all()


def test_a_moved_root_is_not_taken_for_the_old_one(tmp_path):
    shared = tmp_path / "shared-cache"
    old = make_root(tmp_path / "old")
    path = cache_path(old, CacheSpec(), shared)
    new = tmp_path / "new"
    shutil.copytree(old, new)  # same faces.csv, same bytes and modification times
    assert cache_path(new, CacheSpec(), shared) != path


# -- 2. the split column must agree with the split folder ------------------------------------------------
def test_a_test_image_labelled_as_train_is_an_error_naming_line_path_and_folder(tmp_path, capsys):
    root = make_root(tmp_path / "root")
    rows = read_index(root / "faces.csv")
    leak = next(i for i, r in enumerate(rows) if r.split == "test")
    rows[leak] = replace(rows[leak], split="train")
    write_index(root / "faces.csv", rows)
    where = f"{root / 'faces.csv'}:{leak + 2}"
    with pytest.raises(ValueError) as err:
        dm_of(root).setup("fit")
    msg = str(err.value)
    assert where in msg and rows[leak].path in msg and "split column 'train'" in msg and "folder 'test'" in msg
    assert main(["prepare", "cache", str(root), "--workers", "0"]) == 2
    assert where in capsys.readouterr().err
    assert not (root / ".cache").exists()


@pytest.mark.parametrize(
    "folder,split", [("validation", "val"), ("val", "val"), ("Validation", "val"), ("TRAIN", "train"), ("Test", "test")]
)
def test_split_folders_as_the_writers_name_them_pass(folder, split):
    check_folders([FaceRow(split, f"{folder}/Happy/a.png", "Happy", None)], "faces.csv")


def test_detect_on_a_caer_s_root_with_a_validation_folder_gives_an_index_that_passes(tmp_path):
    root = tmp_path / "root"
    for rel in ("train/Angry/a.png", "train/Happy/b.png", "validation/Happy/c.png", "test/Anger/d.png"):
        write_image(root / rel, noise(len(rel), (24, 16)))  # below MTCNN's minimum: no detector run
    assert main(["prepare", "detect", str(root)]) == 0
    rows = read_index(root / "faces.csv")
    assert [(r.split, r.path) for r in rows][2] == ("val", "validation/Happy/c.png")
    check_folders(rows, str(root / "faces.csv"))
    dm = dm_of(root)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.indices.items()} == {"train": 2, "val": 1, "test": 1}


# -- 3. zero data is an error, never a run that trains on nothing -----------------------------------------
@pytest.mark.parametrize(
    "files,found",
    [(["train/x.png", "test/y.png"], "train/x.png"), (["img.png"], "img.png"), (["train/.keep"], "train/ (empty)")],
)
@pytest.mark.parametrize("step", ["scan", "detect"])
def test_a_root_without_class_folders_fails_explaining_the_layout(tmp_path, capsys, files, found, step):
    root = tmp_path / "root"
    for rel in files:
        write_image(root / rel, noise(0)) if rel.endswith(".png") else (root / rel).parent.mkdir(parents=True)
    assert main(["prepare", step, str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glamor: error: ")
    assert LAYOUT in err and "Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise" in err and found in err
    assert not (root / "faces.csv").exists()


def test_detect_in_process_gives_back_the_sigterm_handler_it_installed(tmp_path):
    """`prepare detect` turns SIGTERM into a save-and-stop only while it runs: left installed, a later
    worker pool of the same process (its terminate() sends SIGTERM) had its workers raise instead of end."""
    before = signal.getsignal(signal.SIGTERM)
    (tmp_path / "root/train").mkdir(parents=True)
    assert main(["prepare", "detect", str(tmp_path / "root")]) == 2
    root = tmp_path / "ok"
    write_image(root / "train/Happy/a.png", noise(0, (24, 16)))
    assert main(["prepare", "detect", str(root)]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_cache_of_an_index_without_rows_fails(tmp_path, capsys):
    root = make_root(tmp_path / "root")
    write_index(root / "faces.csv", [])
    assert main(["prepare", "cache", str(root), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'faces.csv'} has no rows" in err and LAYOUT in err
    with pytest.raises(ValueError, match="has no rows"):
        dm_of(root).setup("fit")


@pytest.mark.parametrize(
    "splits,stage,empty",
    [
        ({"val": 2, "test": 2}, "fit", "train"),
        ({"train": 4, "test": 2}, "fit", "val"),
        ({"train": 4, "val": 2}, "test", "test"),
        ({"train": 4, "val": 2}, "validate", None),
    ],
)
def test_data_module_refuses_an_empty_split_its_stage_needs(tmp_path, splits, stage, empty):
    root = make_root(tmp_path / "root", splits)
    kw = {"val_from": "val"} if "val" in splits else {"val_from": "train", "val_fraction": 0.0}
    dm = dm_of(root, **kw)
    if empty is None:
        dm.setup(stage)
        return
    with pytest.raises(ValueError) as err:
        dm.setup(stage)
    msg = str(err.value)
    assert str(root / "faces.csv") in msg and f"no {empty} images" in msg and LAYOUT in msg, msg
    assert f"{empty} 0" in msg


def test_a_data_module_set_up_for_fit_still_checks_the_test_split(tmp_path):
    dm = dm_of(make_root(tmp_path / "root", {"train": 4, "val": 2}))
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"no test images.*train 4, val 2, test 0"):
        dm.setup("test")


def test_all_images_dropped_is_an_empty_split_too(tmp_path):
    root = make_root(tmp_path / "root")
    rows = [
        replace(r, box=None, score=None, source="none") if r.split == "train" else r
        for r in read_index(root / "faces.csv")
    ]
    write_index(root / "faces.csv", rows)
    with pytest.raises(ValueError, match=r"no train images.*4 without a face.*no_face='drop'"):
        dm_of(root, no_face="drop").setup("fit")


# -- 4. SynthCAER sizes it cannot make are argument errors ------------------------------------------------
@pytest.mark.parametrize(
    "args,named",
    [
        (["--per-class", "0"], "--per-class"),
        (["--per-class", "-3"], "--per-class"),
        (["--per-class-val", "-1"], "--per-class-val"),
        (["--per-class-test", "-1"], "--per-class-test"),
        (["--width", "40"], "--width"),
        (["--height", "20"], "--height"),
        (["--weak-fraction", "1.5"], "--weak-fraction"),
        (["--weak-fraction", "-0.1"], "--weak-fraction"),
        (["--max-distractors", "-1"], "--max-distractors"),
        (["--per-class", "many"], "--per-class"),
    ],
)
def test_synth_rejects_sizes_it_cannot_make(tmp_path, capsys, args, named):
    out = tmp_path / "synth"
    tiny = ["--per-class", "1", "--per-class-val", "0", "--per-class-test", "0"]  # the last of a flag wins
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "synth", str(out), *tiny, *args])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("glamor prepare synth: error: argument ") and named in last and args[1] in last
    assert not out.exists()
