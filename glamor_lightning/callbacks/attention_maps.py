"""Logs attention overlays of a fixed set of validation images to W&B after every validation epoch.

Without a `WandbLogger` among the trainer's loggers it does nothing (one isinstance check per epoch).
The images are picked once (round-robin over the classes, deterministic) and run through the model on
global rank 0 only, in eval mode; they appear under `val/attention` as a list of `wandb.Image`, each
the masked context crop | its attention overlay, captioned with the true and predicted class.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class AttentionMapLogger(Callback):
    """Args:
    n: number of validation images.
    every_n_epochs: log every this many validation epochs.
    key: the W&B key.
    """

    def __init__(self, n: int = 8, every_n_epochs: int = 1, key: str = "val/attention") -> None:
        self.n, self.every_n_epochs, self.key = n, max(1, every_n_epochs), key
        self._batch = None  # (faces, contexts, labels) picked on first use
        self._count = 0

    @staticmethod
    def _wandb_loggers(trainer: L.Trainer) -> list:
        from lightning.pytorch.loggers import WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _pick(self, trainer: L.Trainer):
        from glamor_lightning.analysis.attention_maps import dataset_batch, pick_samples

        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "dataset") or "val" not in getattr(dm, "indices", {}):
            return None
        dataset = dm.dataset("val")
        if not len(dataset):
            return None
        faces, contexts, labels, _ = dataset_batch(dataset, pick_samples(dataset.labels, self.n))
        return faces, contexts, labels

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = self._wandb_loggers(trainer)
        if not loggers:
            return
        self._count += 1
        if (self._count - 1) % self.every_n_epochs:
            return
        if self._batch is None:
            self._batch = self._pick(trainer)
            if self._batch is None:
                log.warning("AttentionMapLogger: no validation data to draw attention maps from")
                self._batch = False
        if not self._batch:
            return
        import wandb

        from glamor_lightning.analysis.attention_maps import overlay, run_model

        faces, contexts, labels = self._batch
        result = run_model(pl_module, faces, contexts)
        classes = list(getattr(pl_module, "class_names", [str(i) for i in range(result.probs.shape[1])]))
        images = []
        for i in range(len(labels)):
            ctx = contexts[i].numpy()
            pred = int(result.probs[i].argmax())
            panel = np.concatenate([ctx, overlay(ctx, result.attention[i])], axis=1)
            images.append(
                wandb.Image(
                    panel,
                    caption=f"true {classes[int(labels[i])]}, predicted {classes[pred]} ({result.probs[i, pred]:.2f})",
                )
            )
        for lg in loggers:
            lg.experiment.log({self.key: images, "trainer/global_step": trainer.global_step})
