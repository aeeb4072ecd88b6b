"""Lightning's rich progress bar, redrawn at most a few times a second in training.

`RichProgressBar` moves its bar, gathers the progress-bar metrics (`trainer.progress_bar_metrics`) and
redraws at the end of every training batch: at the authors' batch of 4 the original model runs about 30 steps a
second, and that work cost 1.5-2.7 % of its training speed (docs/speed-log.md), for redraws no one can read.
Here a training batch's end does that work only when `min_interval_s` has passed since the last time (so the
first batch's always), and always at an epoch's last batch, so the bar looks the same to a person and ends each
epoch on its exact figures.
Everything else (validation, test, the layout, `refresh_rate`) is Lightning's own.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """`RichProgressBar` whose training-batch updates are at least `min_interval_s` seconds apart."""

    def __init__(self, *args: Any, min_interval_s: float = 0.1, **kwargs: Any) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be 0 or more (0: every batch), got {min_interval_s}")
        super().__init__(*args, **kwargs)
        self.min_interval_s = min_interval_s
        self._last_update = float("-inf")
        #: training batches whose end updated the bar (the others were skipped as too soon)
        self.train_updates = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        last_of_epoch = batch_idx + 1 >= self.total_train_batches
        if now - self._last_update < self.min_interval_s and not last_of_epoch:
            return
        self._last_update = now
        self.train_updates += 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
