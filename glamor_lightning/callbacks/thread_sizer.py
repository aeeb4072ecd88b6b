"""Re-sizes torch's CPU threads to the cores other programs leave free, every few seconds of training.

See `glamor_lightning.threads` for why: a training that keeps one thread per core beside other busy programs
collapses (4.8x slower beside two busy threads on 2 cores, where its share predicts 2x). This callback measures
other programs' load over the last `every_s` seconds and sets `torch.set_num_threads` to the free cores (at
least 1, at most the threads the run started with), so a run slows down by its share when the machine fills
and takes the cores back when they are free again. CPU training only; it does nothing on a GPU, off Linux, or
with `enabled: false`. The threads the run started with are restored when training ends.

The thread count changes the order of some floating-point sums, so a run that was re-sized is not bit-equal to
one that was not; set `callbacks.thread_sizer.enabled=false` where bit-equality across runs matters.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from glamor_lightning.threads import CpuMeter, SizedThreads, check_every_s

log = logging.getLogger(__name__)


class ThreadSizer(Callback):
    def __init__(self, enabled: bool = True, every_s: float = 5.0) -> None:
        self.enabled, self.every_s = bool(enabled), check_every_s(every_s)  # a bad value fails at start-up
        self.sized: SizedThreads | None = None
        #: (threads before, threads after) of every change in the last fit: what the run did
        self.changes: list[tuple[int, int]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sized, self.changes = None, []
        if self.enabled and pl_module.device.type == "cpu":
            meter = CpuMeter()
            if meter.available:
                self.sized = SizedThreads(self.every_s, meter=meter)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        change = self.sized.tick() if self.sized is not None else None
        if change:
            before, after, other = change
            log.info("torch threads %d -> %d: other programs kept %.1f of %d cores busy", before, after, other,
                     self.sized.meter.cores)  # fmt: skip
            self.changes.append((before, after))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.sized is not None:
            self.sized.restore()
        self.sized = None
