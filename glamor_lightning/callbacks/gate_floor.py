"""The fusion gate's floor, held only while the context branch reads better than chance: `callbacks.gate_floor`.

Why: a floor on the fusion net's weights (`model.fusion_floor`, 0.4 in `recipe=context`) keeps the gate from
shutting the context out while the context branch is still learning to read the scene, which the softmax gate
otherwise does within a few epochs (docs/training.md, "When the fusion gate collapses"). Where the context
branch learns nothing within the run's budget the same floor does harm: it keeps 40 % of every decision on a
vector with no information in it. On SynthCAER that is ResNet-18 and MobileNetV2 trained from scratch for 12
epochs, their auxiliary context heads at chance; with ResNet-18, seed 1, it cost 5.7 points of val accuracy
(results/pooled_head_checks.md).

So the floor follows what the context has learnt, as measured by the auxiliary context head, which reads the
context alone (`model.aux_heads`): for the first `hold_fraction` of the epochs the configured floor holds; from
then on it holds in an epoch only if, over the previous training epoch, that head classified more samples right
than chance would (1 / the number of classes; a one-sided exact binomial test at level `alpha`, its counts summed
over the DDP processes, so every process decides alike). Otherwise the gate is free (floor 0) for that epoch. The
gate's own weights are never touched; the decision is taken again after every epoch, so a context branch that
starts to read the scene late gets its floor back.

The floor changes at the start of an epoch, so every checkpoint saved within or at the end of an epoch holds
the floor that epoch trained and validated under (`models.fusion.FLOOR_KEY`, which the module saves and every
loading path restores); the counts and the pending decision are in this callback's checkpoint state, so a
resumed run decides as the uninterrupted one does. Each epoch logs `train/acc_context_head` (the head's
training accuracy) and `train/gate_floor` (the floor it trained under).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from glamor_lightning.models.fusion import FusionNet


def above_chance(hits: int, n: int, classes: int, alpha: float) -> bool:
    """Whether `hits` right out of `n` is more than guessing among `classes` gets: P(X >= hits) < alpha for
    X ~ Binomial(n, 1 / classes) (exact, scipy's survival function, as `glamor compare`'s tests use scipy; n = 0
    is never above chance)."""
    from scipy.stats import binom  # once per epoch: not worth scipy's import at start-up

    return n > 0 and float(binom.sf(hits - 1, n, 1.0 / classes)) < alpha


class GateFloorFollowsContext(Callback):
    """Holds `model.fusion_floor` only while the auxiliary context head reads better than chance (see above).

    Args:
        enabled: off by default; `recipe=context` turns it on.
        hold_fraction: the share of `trainer.max_epochs` (rounded up) during which the configured floor holds
            whatever the head reads: the head needs some epochs to show what it learns. A run bounded by steps
            alone (`max_epochs` null or -1) holds it for its first epoch only.
        alpha: the level of the one-sided binomial test against chance.
    """

    def __init__(self, enabled: bool = False, hold_fraction: float = 0.25, alpha: float = 0.001) -> None:
        if not 0.0 <= hold_fraction <= 1.0:
            raise ValueError(f"callbacks.gate_floor.hold_fraction must be in [0, 1], got {hold_fraction}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"callbacks.gate_floor.alpha must be in (0, 1], got {alpha}")
        self.enabled, self.hold_fraction, self.alpha = bool(enabled), float(hold_fraction), float(alpha)
        self.configured: float | None = None  # the floor the model was built with
        self.hits = self.seen = 0  # the context head's counts so far in this epoch (this process)
        self.pending: float | None = None  # the floor the next epoch trains under, once decided

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        net = pl_module.net
        fusion = getattr(net, "fusion", None)
        if not isinstance(fusion, FusionNet) or not net.has_aux_heads:
            raise ValueError(
                "callbacks.gate_floor sets the fusion net's floor from the auxiliary context head's accuracy: it "
                "needs model.fusion=fusion_net and model.aux_heads=true (a model with both branches); or set "
                "callbacks.gate_floor.enabled=false"
            )
        if self.configured is None:
            self.configured = fusion.floor
        if not self.configured:
            raise ValueError(
                "callbacks.gate_floor holds model.fusion_floor while the context reads better than chance, but the "
                "floor is 0: set model.fusion_floor (e.g. 0.4, as recipe=context does), or "
                "callbacks.gate_floor.enabled=false"
            )

    def _hold_epochs(self, trainer: L.Trainer) -> int:
        epochs = trainer.max_epochs or 0
        return math.ceil(self.hold_fraction * epochs) if epochs > 0 else 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        if trainer.current_epoch < self._hold_epochs(trainer):
            floor = self.configured
        else:
            floor = self.configured if self.pending is None else self.pending
        fusion = pl_module.net.fusion
        if floor != fusion.floor:
            rank_zero_info(f"epoch {trainer.current_epoch}: fusion gate floor {fusion.floor:g} -> {floor:g}")
            fusion.set_floor(floor)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        hits = getattr(pl_module, "branch_hits", None) if self.enabled else None
        if hits is not None:
            self.hits = self.hits + hits[1]  # a device tensor from the first step on: no host sync per step
            self.seen += len(batch[2])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        counts = torch.tensor([int(self.hits), self.seen], dtype=torch.float64, device=pl_module.device)
        hits, seen = (int(c) for c in trainer.strategy.reduce(counts, reduce_op="sum"))
        self.hits = self.seen = 0
        # logged here, not at the epoch's start: an epoch resumed mid-way logs them as the uninterrupted one does
        pl_module.log("train/gate_floor", pl_module.net.fusion.floor, on_step=False, on_epoch=True)
        if seen:
            pl_module.log("train/acc_context_head", hits / seen, on_step=False, on_epoch=True, sync_dist=False)
        classes = pl_module.hparams.num_classes
        self.pending = self.configured if above_chance(hits, seen, classes, self.alpha) else 0.0

    def state_dict(self) -> dict[str, Any]:
        # mid-epoch, the counts are this process's (rank 0's in the file): a DDP run resumed mid-epoch decides
        # that epoch on rank 0's share counted once per process, which can only move the test's n, not its rate
        return {"configured": self.configured, "hits": int(self.hits), "seen": self.seen, "pending": self.pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.configured = state_dict.get("configured")
        self.hits, self.seen = int(state_dict.get("hits", 0)), int(state_dict.get("seen", 0))
        self.pending = state_dict.get("pending")
