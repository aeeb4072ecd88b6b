"""The data module on a real SynthCAER root: splits, shapes, dtypes, masking, errors."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from conftest import make_datamodule
from glamor_lightning.data.classes import CLASSES, UnknownClassError
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.geometry import context_box
from glamor_lightning.data.images import read_rgb
from glamor_lightning.data.index import read_index

make_dm = make_datamodule


def test_batches_have_the_paper_shapes(synth_root):
    dm = make_dm(synth_root)
    assert {k: len(v) for k, v in dm.indices.items()} == {"train": 56, "val": 21, "test": 28}
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        face, context, label, row = next(iter(loader))
        assert face.dtype == context.dtype == torch.uint8
        assert face.shape == (4, 96, 96, 3) and context.shape == (4, 112, 112, 3)
        assert label.dtype == torch.int64 and label.min() >= 0 and label.max() < len(CLASSES)


def test_labels_follow_the_class_folders(synth_root):
    dm = make_dm(synth_root)
    ds = dm.dataset("test")
    for i in range(len(ds)):
        row = dm.rows[ds.indices[i]]
        assert CLASSES[ds[i][2]] == row.label == row.path.split("/")[1]


def test_face_region_of_context_is_zero_before_augmentation(synth_root):
    dm = make_dm(synth_root)
    for i in dm.indices["train"][:10]:
        row = dm.rows[i]
        image = read_rgb(synth_root / row.path)
        x1, y1, x2, y2 = context_box(row.box, image.shape[1], image.shape[0])
        ctx = np.asarray(dm.cache.contexts[i])
        inner = ctx[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
        assert inner.size > 0 and inner.max() == 0, row.path
        assert ctx.max() > 0  # the rest of the image is there
        # the face crop is the box of the original image
        face = np.asarray(dm.cache.faces[i])
        assert face.shape == (96, 96, 3) and face.std() > 0


def test_context_visible_keeps_the_face(synth_root):
    dm = make_dm(synth_root, mask_face=False)
    row_i = dm.indices["train"][0]
    row = dm.rows[row_i]
    image = read_rgb(synth_root / row.path)
    x1, y1, x2, y2 = (int(v) for v in context_box(row.box, image.shape[1], image.shape[0]))
    assert np.asarray(dm.cache.contexts[row_i])[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].max() > 0


def test_training_augmentation_is_seeded_per_epoch(synth_root):
    dm = make_dm(synth_root)
    ds = dm.dataset("train")
    a, b, c = ds[(0, 3)], ds[(0, 3)], ds[(1, 3)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))
    ev = dm.dataset("test")
    assert torch.equal(ev[(0, 2)][1], ev[(5, 2)][1])  # evaluation: centre crop, no randomness


def test_val_split_from_train_is_stratified_and_seeded(synth_root, tmp_path):
    root = tmp_path / "noval"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    rows = [r for r in csv.DictReader((root / "faces.csv").open()) if r["split"] != "val"]
    with (root / "faces.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader(), w.writerows(rows)
    dm1, dm2 = make_dm(root, val_fraction=0.25), make_dm(root, val_fraction=0.25)
    assert np.array_equal(dm1.indices["val"], dm2.indices["val"])
    labels = [dm1.rows[i].label for i in dm1.indices["val"]]
    assert sorted(set(labels)) == sorted(CLASSES) and len(labels) == 14  # 2 of 8 per class
    assert not set(dm1.indices["val"]) & set(dm1.indices["train"])


def test_missing_root_is_a_clear_error(tmp_path):
    dm = EmotionDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.*glamor prepare synth"):
        dm.setup("fit")


def test_unknown_class_folder_is_an_error_naming_it(synth_root, tmp_path):
    root = tmp_path / "badclass"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    (root / "train" / "Happy").rename(root / "train" / "Joyful")
    text = (root / "faces.csv").read_text().replace("train/Happy/", "train/Joyful/")
    (root / "faces.csv").write_text(text)
    with pytest.raises(UnknownClassError, match="Joyful"):
        make_dm(root)


def test_label_disagreeing_with_folder_is_an_error(synth_root, tmp_path):
    root = tmp_path / "mislabel"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    lines = (root / "faces.csv").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if "/Sad/" in line)
    lines[i] = lines[i].replace(",Sad,", ",Happy,")
    (root / "faces.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="folder 'Sad' but labelled 'Happy'"):
        make_dm(root)


def test_cache_is_reused_and_rebuilt_when_the_index_changes(synth_root, tmp_path):
    root = tmp_path / "cached"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    first = make_dm(root).cache.path
    assert make_dm(root).cache.path == first
    rows = read_index(root / "faces.csv")
    (root / "faces.csv").write_text((root / "faces.csv").read_text().replace(",synthetic", ",imported"))
    assert len(read_index(root / "faces.csv")) == len(rows)
    assert make_dm(root).cache.path != first
