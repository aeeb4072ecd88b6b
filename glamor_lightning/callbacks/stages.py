"""Staged training (GLAMOR-Net paper §4.2): the branches first, then the fusion, then everything jointly.

The paper trains the face and context encoders separately before training the whole model, because
the fusion weights (w_f, w_c) otherwise collapse to 0 or 1. `StageScheduler` does this from config, in
the spirit of Lightning's `BaseFinetuning`: a list of stages, each with

- `start`: the epoch it starts at (an int), or a fraction of `trainer.max_epochs` (a float in [0, 1],
  rounded down), so that one schedule fits runs of any length;
- `train`: the parts of `GlamorNet` that learn (`all`, or names among `GlamorNet.PARTS`); the others are
  frozen;
- `losses`: which heads' cross-entropies count, with weights (`fused`, and the auxiliary `face` and
  `context` heads that `EmotionModule(aux_heads=...)` adds);
- `lr_factor` (default 1): multiplies the learning rate of the parts this stage *re-opens* (parts that
  trained in an earlier stage, were frozen in the stage before this one, and train again).

The schedule itself is configuration: `callbacks.stages.stages` in `conf/callbacks/default.yaml` is the
one place it is written (this class has no default schedule).

A stage that re-opens parts starts their optimiser state afresh (SGD: the momentum buffers), once, as it
begins: the buffers still hold gradients of an earlier stage's loss (the auxiliary heads'), which would
otherwise push the first steps of the new stage. The stage the run last entered is in the callback's
checkpoint state, so a run resumed after the re-open keeps its momentum, and one resumed before it
clears it when it gets there, as the uninterrupted run does; every DDP process clears the same state.

How a part is frozen, and why this way (DDP):

- its parameters keep `requires_grad=True`. DDP registers the parameters that require gradients
  once, when it wraps the model; flipping the flag later desynchronises its reducer (a re-opened
  parameter would never be all-reduced again, or DDP waits for gradients that never come). Instead
  every head's loss enters every step's loss, times 0 when it does not count, so the graph, and so
  DDP's expectations, are the same at every step; no `find_unused_parameters` is needed;
- after backward (and DDP's all-reduce), the frozen parts' gradients are set to None in
  `on_before_optimizer_step`: SGD skips a parameter without a gradient entirely, so neither the
  weight, nor its momentum buffer, nor weight decay moves it (a zero gradient would not be enough:
  momentum would keep moving the weight). Their learning rate is also shown as 0;
- its BatchNorm layers are put in eval mode, so their running statistics do not change either, and
  this is re-applied at every training batch (Lightning's evaluation loop restores modes, but other
  code may call `.train()`).

The stage is a function of the epoch, so a resumed run (from any checkpoint, mid-epoch included) is
in the right stage with the right parts frozen: the stage is applied in `on_train_start`, after the
checkpoint is restored, and at every epoch start. The callback also logs `stage` (the stage's index)
per epoch; the module logs the mean fusion weights `train/w_face`, `train/w_context` (and `val/...`).

Models with a single branch (inputs 'face', 'context', 'context_visible') have nothing to stage: the
callback says so and leaves training end to end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from glamor_lightning.losses import LOSSES  # the losses a stage can count (`losses.head_losses`)
from glamor_lightning.models.glamor import GlamorNet
from glamor_lightning.optimizers import forget_parts

log = logging.getLogger(__name__)

#: The parts of `GlamorNet` a stage can train (its top-level modules, one optimiser group each).
PARTS = GlamorNet.PARTS


@dataclass(frozen=True)
class Stage:
    name: str
    start: int | float  #: an epoch (int) or a fraction of max_epochs (float)
    train: tuple[str, ...]  #: parts that learn
    losses: dict[str, float]  #: loss name → weight
    lr_factor: float = 1.0  #: for the parts this stage re-opens

    @classmethod
    def parse(cls, spec: Mapping[str, Any], index: int) -> Stage:
        spec = dict(spec)
        name = str(spec.pop("name", f"stage{index}"))
        where = f"stage {index} ({name!r})"
        if "start" not in spec:
            raise ValueError(f"{where}: give its `start` (an epoch, or a fraction of max_epochs)")
        start = spec.pop("start")
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise ValueError(f"{where}: start must be an int epoch or a float fraction, got {start!r}")
        if isinstance(start, float) and not 0.0 <= start <= 1.0:
            raise ValueError(f"{where}: a float start is a fraction of max_epochs in [0, 1], got {start}")
        if isinstance(start, int) and start < 0:
            raise ValueError(f"{where}: start must be >= 0, got {start}")
        train = spec.pop("train", "all")
        train = PARTS if train == "all" else tuple(str(t) for t in ([train] if isinstance(train, str) else train))
        unknown = [t for t in train if t not in PARTS]
        if unknown:
            raise ValueError(f"{where}: unknown part(s) {unknown}; parts: all, {', '.join(PARTS)}")
        losses = spec.pop("losses", {"fused": 1.0})
        if isinstance(losses, str):
            losses = [losses]
        if not isinstance(losses, Mapping):
            losses = {str(k): 1.0 for k in losses}
        losses = {str(k): float(v) for k, v in losses.items()}
        bad = [k for k in losses if k not in LOSSES]
        if bad:
            raise ValueError(f"{where}: unknown loss(es) {bad}; losses: {', '.join(LOSSES)}")
        if not any(v != 0 for v in losses.values()):
            raise ValueError(f"{where}: no loss counts (all weights are 0)")
        lr_factor = float(spec.pop("lr_factor", 1.0))
        if not lr_factor > 0:
            raise ValueError(f"{where}: lr_factor must be > 0, got {lr_factor}")
        if spec:
            raise ValueError(f"{where}: unknown key(s) {sorted(spec)}; keys: name, start, train, losses, lr_factor")
        return cls(name, start, train, losses, lr_factor)


class StageScheduler(Callback):
    """Trains `EmotionModule`'s net in stages (see the module docstring).

    Args:
        stages: stage specs (mappings with `name`, `start`, `train`, `losses`, `lr_factor`); the
            first must start at epoch 0. The paper's schedule is `callbacks.stages.stages` in
            `conf/callbacks/default.yaml`.
        enabled: False makes the callback do nothing (the configs keep the schedule at hand, off).
    """

    def __init__(self, stages: Sequence[Mapping[str, Any]] | None, enabled: bool = True) -> None:
        specs = list(stages or [])
        if not specs:
            raise ValueError(
                "StageScheduler needs at least one stage (callbacks.stages.stages; the paper's "
                "schedule is in conf/callbacks/default.yaml)"
            )
        self.stages = [Stage.parse(s, i) for i, s in enumerate(specs)]
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.enabled = bool(enabled)
        self.active = self.enabled
        self.starts: list[int] = []
        self.index: int | None = None  #: the stage in force
        self.entered: int | None = None  #: the stage whose start (the re-opened parts' reset) is done
        self.frozen: frozenset[str] = frozenset()
        self._parts: dict[str, nn.Module] = {}
        self._loaded: dict[str, Any] | None = None
        self._warned_schedule = False

    # -- set-up ------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return "StageScheduler"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        net = getattr(pl_module, "net", None)
        if net is None:
            raise TypeError("StageScheduler works on a module with a `net` (EmotionModule)")
        self._parts = {name: child for name, child in net.named_children() if name in PARTS}
        if getattr(net, "inputs", "both") != "both":
            self.active = False
            rank_zero_info(
                f"StageScheduler: the model has one branch (inputs={net.inputs!r}): nothing to "
                "stage, it trains end to end."
            )
            return
        available = {"fused"} | ({"face", "context"} if getattr(net, "has_aux_heads", False) else set())
        for s in self.stages:
            missing = sorted(k for k, w in s.losses.items() if w != 0 and k not in available)
            if missing:
                raise ValueError(
                    f"stage {s.name!r} counts the {', '.join(missing)} loss(es), but the model has no "
                    "auxiliary heads: set model.aux_heads=true (`callbacks=staged` does)"
                )
        self.starts = self._resolve_starts(trainer)

    def _resolve_starts(self, trainer: L.Trainer) -> list[int]:
        starts = []
        for s in self.stages:
            if isinstance(s.start, float):
                if not trainer.max_epochs or trainer.max_epochs < 0:
                    raise ValueError(
                        f"stage {s.name!r} starts at a fraction of max_epochs, but max_epochs "
                        f"is {trainer.max_epochs}: give integer start epochs"
                    )
                starts.append(math.floor(s.start * trainer.max_epochs))
            else:
                starts.append(int(s.start))
        if starts[0] != 0:
            raise ValueError(f"the first stage ({self.stages[0].name!r}) must start at epoch 0, got {starts[0]}")
        if any(b < a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"stages must start in order, got start epochs {starts}")
        skipped = [s.name for s, a, b in zip(self.stages, starts, starts[1:]) if a == b]
        if skipped:
            rank_zero_warn(
                f"StageScheduler: stage(s) {skipped} last 0 epochs with max_epochs="
                f"{trainer.max_epochs} (start epochs {starts}) and are skipped"
            )
        return starts

    def stage_at(self, epoch: int) -> int:
        """Index of the stage in force at `epoch`."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def reopened(self, index: int) -> frozenset[str]:
        """Parts that stage `index` re-opens: trained before stage index-1, frozen in it, trained now."""
        if index < 2:
            return frozenset()
        earlier = set().union(*(self.stages[j].train for j in range(index - 1)))
        return frozenset(set(self.stages[index].train) - set(self.stages[index - 1].train)) & earlier

    # -- applying a stage ---------------------------------------------------------------------
    def _apply_stage(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index = self.stage_at(trainer.current_epoch)
        stage = self.stages[index]
        if index != self.index:
            rank_zero_info(
                f"StageScheduler: epoch {trainer.current_epoch}: stage {index} {stage.name!r} "
                f"(trains {', '.join(t for t in stage.train if t in self._parts)}; losses "
                f"{stage.losses}"
                + (
                    f"; lr x{stage.lr_factor} for {sorted(self.reopened(index))}"
                    if self.reopened(index) and stage.lr_factor != 1
                    else ""
                )
                + ")"
            )
        self.index = index
        if index != self.entered:  # once per stage: not again for a run resumed inside it
            forget_parts(trainer.optimizers, self.reopened(index))
            self.entered = index
        self.frozen = frozenset(name for name in self._parts if name not in stage.train)
        pl_module.loss_weights = {k: stage.losses.get(k, 0.0) for k in LOSSES}
        self._enforce(trainer)

    def _enforce(self, trainer: L.Trainer) -> None:
        """BatchNorm modes and learning rates of the stage in force (idempotent, cheap)."""
        for name, part in self._parts.items():
            train_bn = name not in self.frozen
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training != train_bn:
                    m.train(train_bn)
        assert self.index is not None
        factor, reopened = self.stages[self.index].lr_factor, self.reopened(self.index)
        for optimizer in trainer.optimizers:
            scheduler = next(
                (c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer), None
            )
            if scheduler is not None and not isinstance(scheduler, LambdaLR):
                if not self._warned_schedule:
                    rank_zero_warn(
                        "StageScheduler sets learning rates on top of closed-form (LambdaLR) "
                        f"schedules only; with {type(scheduler).__name__} frozen parts are still "
                        "frozen (no gradient), but lr_factor is not applied"
                    )
                    self._warned_schedule = True
                continue
            for i, group in enumerate(optimizer.param_groups):
                name = group.get("name")
                if name not in self._parts:
                    continue
                base = scheduler.get_last_lr()[i] if scheduler is not None else group.setdefault("base_lr", group["lr"])
                group["lr"] = 0.0 if name in self.frozen else base * (factor if name in reopened else 1.0)

    # -- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self._apply_stage(trainer, pl_module)  # after a checkpoint is restored: mid-epoch resumes too
        if self._loaded is not None:
            saved = list(zip(self._loaded.get("names", []), self._loaded.get("starts", [])))
            now = [(s.name, start) for s, start in zip(self.stages, self.starts)]
            if saved and saved != now:
                rank_zero_warn(
                    f"StageScheduler: the checkpoint's stage schedule {saved} differs from this "
                    f"run's {now}; this run's is used (epoch {trainer.current_epoch}: stage "
                    f"{self.stages[self.index].name!r})"
                )
            self._loaded = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            self._apply_stage(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.active:
            self._enforce(trainer)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.active or not self.frozen:
            return
        for group in optimizer.param_groups:
            if group.get("name") in self.frozen:
                for p in group["params"]:
                    p.grad = None  # SGD skips it: no step, no momentum, no weight decay

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and self.index is not None:
            pl_module.log("stage", float(self.index), on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        for part in self._parts.values():  # leave no BatchNorm layer in eval mode behind
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(pl_module.training)

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        stage = self.stages[self.index] if self.index is not None else None
        return {
            "stage": self.index,
            "stage_name": stage.name if stage else None,
            "names": [s.name for s in self.stages],
            "starts": list(self.starts),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)
        self.entered = state_dict.get("stage")  # the checkpoint's stage has already begun
