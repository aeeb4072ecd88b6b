"""Attention maps: overlay maths, files with the right sizes, the `attention` command for every attention
kind, and the W&B callback (silent without W&B)."""

from __future__ import annotations

import csv

import cv2
import lightning as L
import numpy as np
import pytest

from conftest import fit_checkpoint
from glamor_lightning.analysis.attention_maps import (
    attention_note,
    figure_title,
    is_uniform,
    overlay,
    pick_samples,
    upsample,
    write_triplet,
)
from glamor_lightning.callbacks.attention_maps import AttentionMapLogger
from glamor_lightning.cli import main
from glamor_lightning.data.geometry import CROP_SIZE


def read(path):
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def test_upsample_keeps_the_peak_where_the_attention_is():
    a = np.full((7, 7), 0.5 / 48)
    a[1, 5] = 0.5  # one hot cell: upper right
    big = upsample(a, (112, 112))
    assert big.shape == (112, 112) and big.max() == pytest.approx(0.5, rel=0.1)  # weights, not rescaled
    y, x = np.unravel_index(big.argmax(), big.shape)
    assert 16 <= y < 32 and 80 <= x < 96  # inside cell (1, 5) of a 7x7 grid of 16-pixel cells
    assert np.allclose(upsample(np.full((7, 7), 1 / 49), (112, 112)), 1 / 49)  # uniform map: uniform
    assert np.allclose(upsample(np.ones((1, 1)), (20, 30)), 1.0)  # face-only model's 1x1 map


def test_overlay_has_the_image_size_and_colours_the_attended_cell():
    image = np.full((112, 112, 3), 128, np.uint8)
    a = np.zeros((7, 7))
    a[3, 3] = 1.0
    out = overlay(image, a)
    assert out.shape == image.shape and out.dtype == np.uint8
    centre, corner = out[56, 56].astype(int), out[2, 2].astype(int)
    assert centre[0] > corner[0] + 50  # jet: red where attended, blue elsewhere
    assert corner[2] > centre[2]


def test_a_uniform_map_is_not_drawn_as_solid_red_and_is_called_uniform():
    """The colour scale is fixed (a cell's weight, log scale 0.001 .. 1): a uniform 7x7 map (1/49 per cell)
    is not drawn like a map that puts 0.5 or all of its weight on one cell."""
    grey = np.full((112, 112, 3), 128, np.uint8)
    uniform = overlay(grey, np.full((7, 7), 1 / 49)).astype(int)
    assert (uniform == uniform[0, 0]).all()  # one colour over the whole crop
    r, g, b = uniform[56, 56]
    assert not (r > g + 40 and r > b + 40), uniform[56, 56]  # not red
    everything = overlay(grey, np.ones((1, 1))).astype(int)[56, 56]  # all the weight in one cell: the top
    peaked = np.full((7, 7), 0.5 / 48)
    peaked[3, 3] = 0.5
    half = overlay(grey, peaked).astype(int)[56, 56]
    assert np.abs(uniform[56, 56] - everything).sum() > 100 and np.abs(uniform[56, 56] - half).sum() > 60
    assert is_uniform(np.full((7, 7), 1 / 49)) and is_uniform(np.ones((1, 1)))
    assert is_uniform(np.full((7, 7), 1 / 49) * np.linspace(0.99, 1.02, 49).reshape(7, 7))  # near-uniform
    assert not is_uniform(peaked)
    assert "uniform" in attention_note(np.full((7, 7), 1 / 49)) and attention_note(peaked) == ""
    assert figure_title("face #1: Sad 0.81", np.full((7, 7), 1 / 49)).startswith("face #1: Sad 0.81; uniform")
    assert figure_title("face #1: Sad 0.81", peaked) == "face #1: Sad 0.81"


def test_write_triplet_sizes(tmp_path):
    original = np.zeros((180, 320, 3), np.uint8)
    ctx = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    files = write_triplet(tmp_path, "x", original, ctx, np.full((7, 7), 1 / 49), title="t")
    assert read(files["original"]).shape == (180, 320, 3)
    assert read(files["context"]).shape == (CROP_SIZE, CROP_SIZE, 3)
    assert read(files["attention"]).shape == (CROP_SIZE, CROP_SIZE, 3)
    assert read(files["panels"]).shape[1] > 3 * 100  # three panels side by side


def test_pick_samples_covers_every_class_deterministically():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert pick_samples(labels, 4) == [0, 1, 3, 5]
    assert pick_samples(labels, 20) == list(range(9))


@pytest.mark.parametrize("attention", ["gla", "standard", "none"])
def test_attention_command_writes_figures(attention, synth_root, tmp_path, capsys):
    ckpt = fit_checkpoint(synth_root, tmp_path / "m.ckpt", attention=attention)
    out = tmp_path / "maps"
    assert main(["attention", "--ckpt", str(ckpt), "--out", str(out), "--n", "3", "--split", "test"]) == 0
    text = capsys.readouterr().out
    assert f"3 test images of {synth_root}" in text
    assert ("maps are uniform" in text) == (attention == "none")
    with (out / "attention.csv").open() as fh:
        records = list(csv.DictReader(fh))
    if attention == "none":
        assert all(r["uniform"] == "True" for r in records)
    assert [r["true"] for r in records] == ["Anger", "Disgust", "Fear"]
    for r in records:
        stem = r["figure"][:-4]
        assert read(out / f"{stem}_original.png").shape == (180, 320, 3)  # SynthCAER images are 320x180
        assert read(out / f"{stem}_context.png").shape == (CROP_SIZE, CROP_SIZE, 3)
        attn = read(out / f"{stem}_attention.png")
        assert attn.shape == (CROP_SIZE, CROP_SIZE, 3)
        assert (out / r["figure"]).is_file()
    assert (out / "attention_grid.png").stat().st_size < 200_000


class _Exp:
    def __init__(self):
        self.logged = []

    def log(self, data):
        self.logged.append(data)


def test_callback_is_silent_without_wandb_and_logs_with_it(synth_root, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from glamor_lightning.data.datamodule import EmotionDataModule
    from glamor_lightning.module import EmotionModule

    cb = AttentionMapLogger(n=4)
    module = EmotionModule()
    dm = EmotionDataModule(str(synth_root), batch_size=8, cache_workers=0)
    common = dict(
        accelerator="cpu",
        limit_val_batches=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[cb],
    )
    L.Trainer(logger=False, **common).validate(module, datamodule=dm)
    assert cb._batch is None  # nothing picked, nothing run

    exp = _Exp()
    monkeypatch.setattr(WandbLogger, "experiment", property(lambda self: exp))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    monkeypatch.setattr(logger, "log_hyperparams", lambda *a, **k: None)
    monkeypatch.setattr(logger, "log_metrics", lambda *a, **k: None)
    monkeypatch.setattr(logger, "watch", lambda *a, **k: None, raising=False)
    L.Trainer(logger=logger, **common).validate(module, datamodule=dm)
    import wandb

    images = [d["val/attention"] for d in exp.logged if "val/attention" in d]
    assert len(images) == 1 and len(images[0]) == 4
    assert all(isinstance(im, wandb.Image) for im in images[0])
    assert images[0][0].image.size == (2 * CROP_SIZE, CROP_SIZE)  # context | overlay
