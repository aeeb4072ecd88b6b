"""Collapse diagnostics: how much each branch really takes part in the fused decision, per epoch.

The fusion net's face weight w_f (`train/w_face`, `val/w_face`, logged by the module) shows a gate that
closes, but not what the decision owes each branch: a model with add or concat fusion has no gate, and a
gate at 0.7 may still leave the context without influence. So, at every validation batch, the fused head
is run again on the same branch vectors with one of them zeroed (`GlamorNet.decide`; cheap: the fusion and
classifier only), and per epoch this callback logs

- `val/acc_without_context`, `val/acc_without_face`: the accuracy of the fused head with v_c (v_f) zeroed;
  `val/acc` minus the first is what the context adds;
- `val/context_flip`: the share of validation predictions that change when v_c is zeroed: 0 means the
  context has no say in the decision, whatever its gate weight;
- `val/acc_context_other_face` (GLA only): the accuracy of the fused head with v_f zeroed and v_c attended
  under the face of an image of another class (GLA's guide taken from the next such image of the batch).
  GLA's attention is computed from v_f, so v_c can carry the face's own expression through *where* it
  looks: a context branch that reads the scene keeps much of `val/acc_without_face` here, one that echoes
  the face falls below chance, as the echo now names the other image's class (docs/training.md);
- `val/attention_entropy` (a learnt context attention, GLA or standard, with or without a face branch): the
  entropy of each image's attention map over its cells divided by log(cells), averaged: 1 for a uniform map, an
  attention that is average pooling in all but name; 0 for all weight on one cell. A GLA that has learnt to pick
  the companion out is well below 1 (the original backbone's main job ended at 0.55); MobileNetV2's stayed near
  0.97 at 12 epochs (results/mobilenetv2_lr_12ep.md), which is why its context added nothing;

and the gradient norm that reaches each branch (`train/grad_norm_face_encoder`,
`train/grad_norm_context_encoder`, `train/grad_norm_attention`, after any gradient modulation and stage
freezing; 0 for a frozen part): a starved branch shows here before its accuracy does. It is the epoch's mean
over every `grad_norm_every_n_steps`-th optimiser step (10 by default; counted from each epoch's first, which
is always one): a norm reads every gradient once, about 1 ms of a 33 ms step of the original model at the
authors' batch of 4 (3 %), and a mean over a tenth of an epoch's steps tells a starved branch as well.
Models with one branch get none of these but the attention entropy. Everything goes to every logger (CSV,
W&B) like the module's own metrics.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from glamor_lightning.models.glamor import GlamorNet
from glamor_lightning.module import to_float_nchw

#: the parts whose gradient norm is logged: the branches' (the face encoder; the context encoder and GLA)
BRANCH_PARTS = tuple(part for parts in GlamorNet.BRANCH_PARTS.values() for part in parts)


@torch.no_grad()
def branch_effects(
    net: torch.nn.Module, v_f: torch.Tensor, v_c: torch.Tensor, target: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Accuracy of the fused head without each branch, and the share of predictions the context decides.

    The three decisions (intact, v_c zeroed, v_f zeroed) are made alike, in fp32 outside autocast, so a
    difference between them is the branch's and not the precision's."""
    v_f, v_c = v_f.float(), v_c.float()
    with torch.autocast(v_f.device.type, enabled=False):
        intact = net.decide(v_f, v_c)[0].argmax(dim=1)
        no_context = net.decide(v_f, torch.zeros_like(v_c))[0].argmax(dim=1)
        no_face = net.decide(torch.zeros_like(v_f), v_c)[0].argmax(dim=1)
    return {
        "val/acc_without_context": (no_context == target).float().mean(),
        "val/acc_without_face": (no_face == target).float().mean(),
        "val/context_flip": (no_context != intact).float().mean(),
    }


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """[B, H, W] attention maps (each summing to 1) -> [B]: each map's entropy over its H·W cells divided by
    log(H·W), in fp32: 1 for a uniform map, 0 for all weight on one cell. Needs at least two cells."""
    a = attention.detach().float().flatten(1)
    if a.shape[1] < 2:
        raise ValueError(f"attention_entropy needs maps of two cells or more, got {tuple(attention.shape[1:])}")
    return -(a * a.clamp_min(torch.finfo(torch.float32).tiny).log()).sum(dim=1) / math.log(a.shape[1])


def other_class_partners(target: torch.Tensor) -> torch.Tensor | None:
    """For each sample, the index of the next sample (cyclically) of another class; None when all share one.
    Loaders keep a split's order, which is often by class: a mere shift would pair a face with its own class."""
    n = len(target)
    partner = torch.full_like(target, -1)
    for shift in range(1, n):
        other = target.roll(-shift) != target
        fill = (partner < 0) & other
        partner[fill] = (torch.arange(n, device=target.device)[fill] + shift) % n
        if (partner >= 0).all():
            return partner
    return None


@torch.no_grad()
def context_under_other_face(
    net: GlamorNet, v_f: torch.Tensor, context_map: torch.Tensor, target: torch.Tensor
) -> torch.Tensor | None:
    """Accuracy of the fused head on the context alone (v_f zeroed) when GLA is guided by the face of an image
    of another class (`other_class_partners`): what the context vector tells once it cannot echo its own face
    (an echo now points to the wrong class). `context_map` is the context encoder's output for the batch (the
    one the validation forward made, so the encoder does not run twice); attention and decision in fp32, as
    `branch_effects`. None for a batch of one class."""
    partner = other_class_partners(target)
    if partner is None:
        return None
    with torch.autocast(context_map.device.type, enabled=False):
        v_c, _ = net.attention(v_f.float()[partner], context_map.float())
        decision = net.decide(torch.zeros_like(v_f, dtype=torch.float32), v_c)[0].argmax(dim=1)
    return (decision == target).float().mean()


def grad_norm_vector(
    optimizer: torch.optim.Optimizer, parts: tuple[str, ...] = BRANCH_PARTS
) -> tuple[list[str], torch.Tensor]:
    """The groups of `parts` the optimiser has, in its order, and the L2 norms of their gradients as one float
    vector on the parameters' device (0 for a group none of whose parameters has a gradient).

    One foreach norm over every tensor of every part, then each part's sum of squares by index: five tensor
    calls a step whatever the number of parts (a norm per part cost 0.57 ms a step at batch 4, 1.5 % of it)."""
    names: list[str] = []
    grads: list[torch.Tensor] = []
    owner: list[int] = []
    for group in optimizer.param_groups:
        if group.get("name") in parts:
            for p in group["params"]:
                if p.grad is not None:
                    grads.append(p.grad.detach())
                    owner.append(len(names))
            names.append(group["name"])
    device = grads[0].device if grads else torch.device("cpu")
    squares = torch.zeros(len(names), device=device)
    if grads:
        per_tensor = torch.stack(torch._foreach_norm(grads)).float()  # torch's own clip_grad_norm_ kernel
        squares.index_add_(0, torch.tensor(owner, device=device), per_tensor.square())
    return names, squares.sqrt()


class BranchDiagnostics(Callback):
    """Logs the collapse diagnostics of the module docstring. `enabled=False` turns it off."""

    def __init__(self, enabled: bool = True, grad_norm_every_n_steps: int = 10) -> None:
        if int(grad_norm_every_n_steps) < 1:
            raise ValueError(
                f"grad_norm_every_n_steps must be 1 or more (1: every step), got {grad_norm_every_n_steps}"
            )
        self.enabled = enabled
        self.grad_norm_every_n_steps = int(grad_norm_every_n_steps)
        #: this epoch's sum of each branch part's gradient norm (one vector, in the order of `_sum_names`), over
        #: `grad_norm_steps` sampled optimiser steps, of `steps_seen` this epoch
        self._set_sums({})
        self.grad_norm_steps = 0
        self.steps_seen = 0
        #: the context encoder's output of the current validation batch (a forward hook during validation)
        self._context_map: torch.Tensor | None = None
        self._hook = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and pl_module.net.inputs == "both" and pl_module.net.attention_reads_face:
            self._hook = pl_module.net.context_encoder.register_forward_hook(self._keep_context_map)

    def _keep_context_map(self, _module, _inputs, output: torch.Tensor) -> None:
        self._context_map = output

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()  # a validation that raised

    def _release(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._hook, self._context_map = None, None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        out = outputs.get("out") if isinstance(outputs, dict) else None
        target = batch[2]
        if out is not None and pl_module.net.uses_context and pl_module.net.config["attention"] != "none":
            entropy = attention_entropy(out.attention).mean()
            pl_module.log(
                "val/attention_entropy", entropy, on_step=False, on_epoch=True, batch_size=len(target), sync_dist=True
            )
        if out is None or out.face_vector is None or out.context_vector is None or pl_module.net.inputs != "both":
            return
        for name, value in branch_effects(pl_module.net, out.face_vector, out.context_vector, target).items():
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=len(target), sync_dist=True)
        if pl_module.net.attention_reads_face:
            context_map, self._context_map = self._context_map, None
            if context_map is None or len(context_map) != len(target):  # no hook call seen (e.g. a compiled net)
                context_map = pl_module.net.context_encoder(to_float_nchw(batch[1], pl_module.hparams.channels_last))
            other = context_under_other_face(pl_module.net, out.face_vector, context_map, target)
            # logged for every batch, a one-class batch with weight 0: every DDP rank logs the same keys
            pl_module.log(
                "val/acc_context_other_face",
                other if other is not None else torch.zeros((), device=target.device),
                on_step=False,
                on_epoch=True,
                batch_size=len(target) if other is not None else 0,
                sync_dist=True,
            )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # summed here and logged once per epoch (`on_train_epoch_end`): a `log` call per step and part cost
        # about 3 % of a step at batch 4 (cProfile of a fit), and a float() per step would stall a GPU
        if not self.enabled or pl_module.net.inputs != "both":
            return
        seen, self.steps_seen = self.steps_seen, self.steps_seen + 1
        if seen % self.grad_norm_every_n_steps:
            return
        names, norms = grad_norm_vector(optimizer)
        if self._sum_names != names or self._sums.device != norms.device:  # an epoch's first step, or a resume's
            sums = self.grad_norm_sums
            self._sum_names = names
            self._sums = torch.tensor([float(sums.get(name, 0.0)) for name in names], device=norms.device)
        self._sums += norms
        self.grad_norm_steps += 1

    @property
    def grad_norm_sums(self) -> dict[str, torch.Tensor]:
        """This epoch's sum of each branch part's gradient norm so far (0-d tensors)."""
        return dict(zip(self._sum_names, self._sums, strict=True))

    def _set_sums(self, sums: dict[str, float]) -> None:
        self._sum_names, self._sums = list(sums), torch.tensor(list(sums.values()), dtype=torch.float32)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, total in self.grad_norm_sums.items():
            # the same on every DDP rank (after the all-reduce): the sync only averages equal values
            pl_module.log(f"train/grad_norm_{name}", total / self.grad_norm_steps, sync_dist=True)
        self._set_sums({})
        self.grad_norm_steps = self.steps_seen = 0

    def state_dict(self) -> dict[str, Any]:
        """The epoch's sums so far and where the sampling stands: a run resumed mid-epoch samples the steps, and
        logs the means, of the run never stopped."""
        return {
            "grad_norm_sums": {k: float(v) for k, v in self.grad_norm_sums.items()},
            "steps": self.grad_norm_steps,
            "steps_seen": self.steps_seen,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._set_sums({k: float(v) for k, v in state_dict.get("grad_norm_sums", {}).items()})
        self.grad_norm_steps = int(state_dict.get("steps", 0))
        # a checkpoint from before the sampling had a norm of every step: the steps seen are the steps summed
        self.steps_seen = int(state_dict.get("steps_seen", self.grad_norm_steps))
