"""EmotionModule on a real Trainer: the learning-rate schedule spans the epochs the run really trains
(max_epochs, max_steps or both), and the per-class test accuracies say nothing about absent classes."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from conftest import cpu_trainer, make_datamodule
from glamor_lightning.callbacks.report import EvalReport
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.module import EmotionModule

LR = 0.01


class EpochLR(Callback):
    """The learning rate of the first parameter group at the start of every training epoch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _trainer(**kw) -> L.Trainer:
    return cpu_trainer(enable_checkpointing=False, precision="32-true", **kw)


def _cosine(epochs: int) -> list[float]:
    return [LR * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)]


# 56 training images in batches of 4, 2 batches per epoch (limit_train_batches)
@pytest.mark.parametrize(
    ("limits", "epochs"),
    [
        ({"max_epochs": None, "max_steps": 8}, 4),  # steps only: 8 / 2 per epoch
        ({"max_epochs": None, "max_steps": 7}, 4),  # the last epoch is partial
        ({"max_epochs": 3, "max_steps": 100}, 3),  # max_epochs ends it first
        ({"max_epochs": 10, "max_steps": 4}, 2),  # max_steps ends it first
        ({"max_epochs": None, "max_steps": 4, "accumulate_grad_batches": 2}, 4),  # 1 optimiser step per epoch
    ],
)
def test_cosine_schedule_spans_the_epochs_the_run_trains(synth_root, limits, epochs):
    probe = EpochLR()
    trainer = _trainer(limit_train_batches=2, limit_val_batches=0, callbacks=[probe], **limits)
    trainer.fit(EmotionModule(lr=LR, lr_schedule="cosine"), datamodule=make_datamodule(synth_root))
    assert trainer.current_epoch == epochs
    assert probe.lrs == pytest.approx(_cosine(epochs))
    assert all(lr > 0 for lr in probe.lrs)  # annealed, never 0 while training


def test_unbounded_cosine_schedule_is_a_clear_error(synth_root):
    trainer = _trainer(max_epochs=-1, max_time={"seconds": 3}, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(ValueError, match=r"lr_schedule='cosine'.*trainer.max_epochs.*trainer.max_steps"):
        trainer.fit(EmotionModule(lr_schedule="cosine"), datamodule=make_datamodule(synth_root))


def _without(dm, label: str):
    """The data module with the test split's samples of `label` left out."""
    dm.indices["test"] = np.array([i for i in dm.indices["test"] if dm.rows[i].label != label])
    return dm


def test_absent_class_has_no_test_accuracy(synth_root, tmp_path):
    absent = "Fear"
    dm = _without(make_datamodule(synth_root), absent)
    report = EvalReport(output_dir=tmp_path)
    trainer = _trainer(callbacks=[report])
    module = EmotionModule()
    metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert f"test/acc_{absent}" not in metrics  # not 0.0: the class has no test sample
    assert metrics["test/n"] == 6 * 4
    per_class = {
        line.split(",")[0]: line.split(",")
        for line in (tmp_path / "per_class_accuracy.csv").read_text().splitlines()[1:]
    }
    assert per_class[absent][1:] == ["0", "0", "nan"]
    for name in CLASSES:
        if name != absent:
            assert metrics[f"test/acc_{name}"] == pytest.approx(float(per_class[name][3]), abs=1e-6)
    # a second test of the same module starts from zero: every test metric was reset
    again = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert again == pytest.approx(metrics)
