"""A training that diverges is not reported as if it had not: a NaN loss makes the epoch's mean NaN (torchmetrics'
default drops it and averages the rest), and the run stops after that epoch with one error line, keeping the best
checkpoint it had."""

from __future__ import annotations

import logging
import math

import torch

from conftest import compose_config
from glamor_lightning.module import EmotionModule
from training_helpers import FAST, fit, read_metrics


def test_epoch_means_keep_their_weights():
    module = EmotionModule()
    module.val_loss.update(torch.tensor(1.0), weight=3)
    module.val_loss.update(torch.tensor(0.0), weight=1)
    assert float(module.val_loss.compute()) == 0.75  # torchmetrics' nan_strategy="disable" would give 0.5


def test_a_nan_step_makes_the_epoch_means_nan():
    module = EmotionModule()
    for metric in (module.train_loss, module.val_loss, module.test_loss, module.train_w_face, module.val_w_face):
        metric.update(torch.tensor(1.0))
        metric.update(torch.tensor(float("nan")))
        assert math.isnan(float(metric.compute()))  # not 1.0, the mean of the finite values


def test_a_diverging_fit_stops_after_the_epoch_with_an_error(synth_root, tmp_path, caplog):
    # SGD at lr 1e30 sends the weights to inf at the first step: every later loss is NaN (the epoch mean of the
    # finite ones, as torchmetrics would report it by default, would be the first step's 1.97)
    cfg = compose_config(
        "train", tmp_path, [f"data.root={synth_root}", *FAST, "trainer.max_epochs=3", "model.lr=1e30", "recipe=plain"]
    )
    with caplog.at_level(logging.ERROR, logger="glamor_lightning.module"):
        trainer = fit(cfg)
    assert trainer.current_epoch == 1  # stopped after epoch 0 of 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "epoch 0: the training loss was nan (training diverged); stopping" in errors[0]
    assert "Lower model.lr (now 1e+30)" in errors[0]
    epochs = [r for r in read_metrics(tmp_path) if "train/loss_epoch" in r]
    assert len(epochs) == 1 and math.isnan(epochs[0]["train/loss_epoch"])
