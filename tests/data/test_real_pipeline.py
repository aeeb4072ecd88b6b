"""A CAER-S-shaped root of real photos goes scan → detect → cache → one training step, as a user runs it."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from glamor_lightning.cli import main
from glamor_lightning.data.cache import CacheSpec, cache_path
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.data.index import read_index
from glamor_lightning.module import EmotionModule
from real_photos import background, scene, write_image

SIZE = (160, 120)
# path → (background, head width, head position, mirrored); None: a photo with no face
TREE = {
    "train/Angry/0001.png": ("coffee", 50, (20, 20), False),
    "train/Angry/0002.png": ("rocket", 44, (90, 40), True),
    "train/Happy/0001.png": ("cat", 56, (60, 10), False),
    "train/Happy/0002.PNG": ("coffee", 40, (100, 60), True),
    "train/Neutral/0001.png": None,
    "train/Neutral/0002.jpg": ("rocket", 60, (10, 30), False),
    "test/Anger/0001.png": ("cat", 48, (30, 50), True),
    "test/Happy/0001.png": ("coffee", 52, (70, 20), False),
}


def test_caer_s_tree_from_scan_to_a_training_step(tmp_path, capsys):
    root = tmp_path / "CAER-S"
    for rel, how in TREE.items():
        image = background("coffee", SIZE) if how is None else scene(how[0], SIZE, how[1], how[2], how[3])
        write_image(root / rel, image)

    assert main(["prepare", "scan", str(root)]) == 0
    assert "8 images" in capsys.readouterr().out

    assert main(["prepare", "detect", str(root), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "7 new with a face, 1 new without" in out
    rows = {r.path: r for r in read_index(root / "faces.csv")}
    assert set(rows) == set(TREE)
    assert rows["train/Angry/0001.png"].label == rows["test/Anger/0001.png"].label == "Anger"
    assert rows["train/Neutral/0001.png"].source == "none"
    for rel, how in TREE.items():
        if how is not None:  # the box lies on the pasted head
            x1, y1, x2, y2 = rows[rel].box
            (hx, hy), w = how[2], how[1]
            assert rows[rel].source == "mtcnn" and hx <= (x1 + x2) / 2 <= hx + w and hy <= (y1 + y2) / 2 <= hy + w * 1.2

    assert main(["prepare", "cache", str(root), "--workers", "0"]) == 0
    assert "8 rows" in capsys.readouterr().out

    dm = EmotionDataModule(str(root), batch_size=2, cache_workers=0, val_from="train", val_fraction=0.34)
    model = EmotionModule(backbone="original")
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=dm)
    assert dm.cache.path == cache_path(root, CacheSpec())  # the cache `prepare cache` made, reused
    assert {k: len(v) for k, v in dm.indices.items()} == {"train": 3, "val": 3, "test": 2}
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert np.isfinite(float(trainer.callback_metrics.get("train/loss", torch.tensor(0.0))))
