"""Learning-rate schedules, chosen by name so checkpoints keep plain hyper-parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    import lightning as L

SCHEDULES = ("constant", "multistep", "cosine")


def planned_epochs(trainer: L.Trainer) -> int | None:
    """The number of epochs `trainer.fit` will train (the last one may be partial), None when unbounded.

    `trainer.max_epochs` bounds it, and so does `trainer.max_steps` (optimiser steps: the training
    batches of an epoch, after `limit_train_batches`, divided by `accumulate_grad_batches`), whichever ends
    training first. With `max_epochs=null` Lightning sets max_epochs to -1 (no bound), so a per-epoch
    schedule sized by max_epochs alone would end after the first epoch. None: neither bounds training
    (only `max_time`, or nothing), or the loader has no length and max_epochs is not set.
    """
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
    if trainer.max_steps is None or trainer.max_steps < 0:
        return max_epochs
    if trainer.train_dataloader is None:  # as `Trainer.estimated_stepping_batches` does
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if not batches or math.isinf(batches):
        return max_epochs
    steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
    by_steps = math.ceil(trainer.max_steps / steps_per_epoch)
    return by_steps if max_epochs is None else min(max_epochs, by_steps)


def make_schedule(
    optimizer: Optimizer,
    name: str,
    lr: float,
    max_epochs: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_epochs: int = 0,
) -> LambdaLR:
    """Per-epoch LambdaLR.

    `multistep` multiplies by `gamma` at each milestone and never goes under `min_lr`: with lr 5e-4,
    milestones (25, 40), gamma 0.1 and min_lr 1e-5 it is the authors' 5e-4 → 5e-5 → 1e-5.
    `cosine` anneals from lr to min_lr over max_epochs. Both may start with a linear warm-up.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown lr schedule {name!r}; known: {', '.join(SCHEDULES)}")
    floor = min_lr / lr if lr > 0 else 0.0

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        if name == "multistep":
            return max(gamma ** sum(epoch >= m for m in milestones), floor)
        if name == "cosine":
            t = min(1.0, (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return LambdaLR(optimizer, factor)
