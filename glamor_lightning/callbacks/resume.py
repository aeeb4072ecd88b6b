"""Exact resume: per-step seeding and mid-epoch `last.ckpt` saves.

A run killed mid-epoch and resumed from `last.ckpt` must end with the weights and metrics of the run that
was never stopped. Lightning restores the weights, optimiser, schedulers, loop counters and callbacks'
states; the rest is here and in the data module:

- the data: `data.resumable.ResumableDataLoader` saves its position in the epoch in the checkpoint and
  skips the batches already trained when Lightning resumes mid-epoch (`EpochSampler` fixes each
  epoch's order and augmentation from the seed, so the remaining batches are the same ones);
- the model's randomness (dropout): Lightning does not save the RNG states, and loaders, validation and
  the resume itself draw from torch's global generator in between. `StepSeed` reseeds torch's global
  generators before every training batch from (seed, epoch, batch index, global rank), so each step's
  random draws depend on where the step is, not on what ran before it;
- the metrics: the module's epoch-long metrics are part of its state dict (`EmotionModule`);
- the checkpoint: `LastCheckpoint` writes `last.ckpt` after every epoch and every n training steps;
- the logs: Lightning does not run `on_train_epoch_start` again for an epoch resumed mid-way, so its
  `LearningRateMonitor` would not log that epoch's learning rates; `LearningRateMonitor` here does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.callbacks import LearningRateMonitor as _LearningRateMonitor
from lightning.pytorch.trainer.states import TrainerFn


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 63-bit seed for one training step of one process."""
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class StepSeed(Callback):
    """Reseeds torch's global generators (CPU and CUDA) before every training batch from (seed, epoch,
    batch_idx, global_rank). `seed=None` turns it off."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.seed is not None:
            seed_generators(step_seed(int(self.seed), trainer.current_epoch, batch_idx, trainer.global_rank))


def seed_generators(seed: int) -> None:
    """`torch.manual_seed(seed)` for the generators a training step draws from: the CPU's, and CUDA's once CUDA is
    in use. `torch.manual_seed` itself also queues a seed for every device kind not yet initialised, formatting a
    stack trace each time (0.15 ms a call here, a step at batch 4 takes 50); a CUDA initialised later starts from
    its own default seed, and the next step's call seeds it."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


class LastCheckpoint(Checkpoint):
    """Writes `last.ckpt` after every epoch (after its validation) and, with `every_n_train_steps=n`,
    every n training steps inside an epoch as well, so a killed run loses at most n steps.

    Lightning 2.6's `ModelCheckpoint(save_last=True, monitor=...)` writes `last.ckpt` only when it
    also writes a top-k checkpoint, so `last.ckpt` stops following the run once the monitored metric
    stops improving; this callback always writes it (the top-k one keeps `save_last: false`).
    It uses public API only (`Trainer.save_checkpoint`, on every process, as DDP needs) and writes
    atomically: a temporary file renamed over `last.ckpt` on global rank 0, so a run killed while saving
    leaves the previous `last.ckpt` whole. It is a `Checkpoint`, which Lightning runs after the other
    callbacks and after the module's epoch-end hooks, so `last.ckpt` holds the epoch's whole state.
    An epoch's last batch is left to the epoch-end save that follows its validation: Lightning (2.6)
    cannot resume a checkpoint taken on an epoch's last batch before its validation (it would skip that
    validation and the epoch's learning-rate step). Put it after the top-k `ModelCheckpoint`, so that
    `last.ckpt` holds that callback's updated best path and score.

    Args:
        dirpath: the folder of `last.ckpt` (a local path); None: `<trainer.default_root_dir>/checkpoints`.
        every_n_train_steps: also save every this many optimiser steps (0: only after every epoch).
    """

    FILENAME = "last.ckpt"
    #: it keeps no best checkpoint (`trainer.checkpoint_callback` is this callback when no top-k one runs)
    best_model_path = ""

    def __init__(self, dirpath: str | os.PathLike | None = None, every_n_train_steps: int = 0) -> None:
        self.dirpath = dirpath
        self.every_n_steps = int(every_n_train_steps or 0)
        self._saved_at: int | None = None  # the global step of the last save (a step is saved once)

    def path(self, trainer: L.Trainer) -> Path:
        """Where `last.ckpt` goes."""
        return Path(
            self.dirpath if self.dirpath is not None else Path(trainer.default_root_dir) / "checkpoints", self.FILENAME
        )

    def _save_last(self, trainer: L.Trainer) -> None:
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or self._saved_at == trainer.global_step
        ):
            return
        path = self.path(trainer)
        tmp = path.with_name(f".{path.name}.tmp")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # every process takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("LastCheckpoint")
        self._saved_at = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (
            self.every_n_steps < 1
            or trainer.global_step % self.every_n_steps
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            return
        self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer)  # Lightning runs the epoch's validation before this hook

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer)  # a run stopped by max_steps mid-epoch; nothing when already saved


class LearningRateMonitor(_LearningRateMonitor):
    """Lightning's `LearningRateMonitor`, which also logs the epoch-start learning rates of an epoch
    resumed mid-way (Lightning does not call `on_train_epoch_start` again for it). Put it after
    `StageScheduler`, which sets the learning rates of the stage in force."""

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_start(trainer, *args, **kwargs)
        if self.logging_interval != "step" and getattr(trainer.fit_loop, "restarted_mid_epoch", False):
            self.on_train_epoch_start(trainer, *args, **kwargs)
