"""The epoch means the module logs: a NaN is reported, not dropped.

torchmetrics' `MeanMetric` drops NaN values with a warning by default and reports the mean of the rest: a training
loss that diverged would be logged as a finite mean. Its `nan_strategy="disable"` propagates NaN but, in
torchmetrics 1.9.0, also replaces the weights by ones (a weighted validation loss becomes unweighted). `NanMean`
keeps the weights and lets NaN through, without a NaN check per update (on a GPU, a device sync per step). It is a
`MeanMetric` with the same states, so checkpoints that hold one load either way.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric


class NanMean(MeanMetric):
    """A weighted mean in which a NaN value (or weight) makes the mean NaN (module docstring)."""

    def _cast_and_nan_check_input(
        self, x: float | Tensor, weight: float | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        weight = torch.ones_like(x) if weight is None else torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        return x.to(self.dtype), weight.to(self.dtype)
