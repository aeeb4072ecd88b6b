"""The context encoder warm-started from the face encoder, once, early in training.

Why: trained from scratch, GLAMOR-Net's context branch is the slow one. On SynthCAER what it must learn
is to read the expressions of the bystanders' faces (and pick the one GLA's face guide points at); the
face encoder learns to read expressions within a few epochs, because its input is nothing but a face.
Both encoders have the same architecture (`GlamorNet` builds them from one backbone name), so at the
start of epoch `epoch` this callback copies the face encoder's weights and BatchNorm statistics into
the context encoder and clears the context encoder's optimiser state (SGD: its momentum buffers, which
held gradients of the weights just replaced). From then on the two encoders train separately, as
before: the model stays the paper's; only where the context encoder starts from changes. It is
initialisation by transfer from a related task (Yosinski et al., "How transferable are features in
deep neural networks?", NeurIPS 2014), the related task being the face branch's own. Measured on SynthCAER
(results/context_warm_start.md): it removes the echo of the face that the context branch learns in some seeds,
and costs about 2 points at 30 epochs in the seeds without one, so it is off in every recipe.

`epoch: null` (the default config) turns it off; an epoch the run never reaches (a short debug run) is
warned about and changes nothing. The copy happens once: whether it happened is in the
callback's checkpoint state, so a run resumed after the copy (mid-epoch included) keeps the weights it
trained since, one resumed before it copies when it gets there, as the uninterrupted run does; every
DDP process copies the same (all-reduced, hence equal) face weights at the same step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from glamor_lightning.optimizers import forget_parts

SOURCE, TARGET = "face_encoder", "context_encoder"


def copy_encoder(net: torch.nn.Module, source: str = SOURCE, target: str = TARGET) -> int:
    """Copy every parameter and buffer of `net.<source>` into `net.<target>` in place; the number of tensors.

    The target keeps its own tensors (their memory format and dtype; the optimiser still holds them), so
    only their values change. A target whose tensors differ in name or shape is refused, naming the first.
    """
    src, dst = getattr(net, source).state_dict(), getattr(net, target).state_dict()
    if src.keys() != dst.keys():
        missing = sorted(set(src.keys()) ^ set(dst.keys()))
        raise ValueError(f"cannot copy {source} into {target}: their tensors differ ({missing[0]!r} is in only one)")
    for name, value in src.items():
        if value.shape != dst[name].shape:
            raise ValueError(
                f"cannot copy {source} into {target}: {name} is {tuple(value.shape)} in one, "
                f"{tuple(dst[name].shape)} in the other"
            )
    with torch.no_grad():
        for name, value in src.items():
            dst[name].copy_(value)
    return len(src)


class ContextWarmStart(Callback):
    """At the start of epoch `epoch`, the context encoder becomes a copy of the face encoder (see above).

    Args:
        epoch: the epoch (0-based) at whose start the copy is made; None turns the callback off. 0 copies
            the face encoder's random initial weights (the encoders then start equal).
    """

    def __init__(self, epoch: int | None = None) -> None:
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
            raise ValueError(f"callbacks.context_warm_start.epoch must be an epoch >= 0 or null (off), got {epoch!r}")
        self.epoch = epoch
        self.done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.epoch is None:
            return
        inputs = getattr(getattr(pl_module, "net", None), "inputs", None)
        if inputs != "both":
            raise ValueError(
                "callbacks.context_warm_start copies the face encoder into the context encoder, but the model "
                f"has one branch (model.inputs={inputs!r}): set callbacks.context_warm_start.epoch=null"
            )
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= self.epoch and not self.done:
            rank_zero_warn(
                f"callbacks.context_warm_start.epoch={self.epoch} is never reached in trainer.max_epochs="
                f"{trainer.max_epochs}: the context encoder trains from its own initialisation (as with null)"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch is None or self.done or trainer.current_epoch != self.epoch:
            return
        copy_encoder(pl_module.net)
        forget_parts(trainer.optimizers, {TARGET})
        self.done = True
        rank_zero_info(f"epoch {self.epoch}: the context encoder starts again from the face encoder's weights")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))
