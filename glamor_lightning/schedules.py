"""Learning-rate schedules, chosen by name so checkpoints keep plain hyper-parameters."""
from __future__ import annotations

import math
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "multistep", "cosine")


def make_schedule(optimizer: Optimizer, name: str, lr: float, max_epochs: int,
                  milestones: Sequence[int] = (), gamma: float = 0.1, min_lr: float = 0.0,
                  warmup_epochs: int = 0) -> LambdaLR:
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
