"""The optimiser: which one (`OPTIMIZERS`), one parameter group per part of the net with its own learning rate
(`part_groups`), and how it runs (`make_optimizer`, shared by the module and the measured training step: torch's
fused SGD kernel or its per-tensor loop, kept as chosen when a checkpoint's state is loaded: `SGD`); `forget_parts`
drops the state of chosen parts (callbacks that re-open or replace a part start its momentum afresh)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import torch
from torch import nn

#: `optimizer` choices: SGD with momentum (the authors'), or AdamW (`momentum` and `nesterov` unused).
OPTIMIZERS = ("sgd", "adamw")


def lr_scale_dict(lr_scale: Mapping[str, float] | None) -> dict[str, float]:
    """`lr_scale` as a plain dict of floats (Hydra's DictConfig is not one; checkpoints stay loadable with
    weights_only=True). Anything but a mapping is refused, naming the fix: in a shell, unquoted braces are expanded
    away (`model.lr_scale={a:6,b:6}` reaches Hydra as the string 'b:6')."""
    if lr_scale is not None and not isinstance(lr_scale, Mapping):
        raise ValueError(
            f"lr_scale must map parts to multipliers, e.g. 'model.lr_scale={{context_encoder: 3}}' (in a shell, "
            f"quote it: unquoted, the braces are expanded away); got {lr_scale!r}"
        )
    return {str(k): float(v) for k, v in (lr_scale or {}).items()}


def check_optimizer_settings(optimizer: str, nesterov: bool, lr_scale: Mapping[str, float], parts: list[str]) -> None:
    """Refuse, naming what to set, an unknown optimiser, Nesterov with AdamW, or an `lr_scale` that names no part
    of the net (`parts`) or has a multiplier that is not positive."""
    if unknown := sorted(set(lr_scale) - set(parts)):
        raise ValueError(f"lr_scale names {unknown}: this model's parts are {parts}")
    if bad := {k: v for k, v in lr_scale.items() if not v > 0}:
        raise ValueError(f"lr_scale multipliers must be > 0, got {bad}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if optimizer == "adamw" and nesterov:
        raise ValueError("nesterov is SGD's: set nesterov=false with optimizer=adamw")


def part_groups(owner: nn.Module, net: nn.Module, lr: float, lr_scale: Mapping[str, float]) -> list[dict]:
    """One optimiser parameter group per top-level part of `net`, named after it; a part named in `lr_scale`
    learns at `lr` times its multiplier (the schedule scales every group alike). Every trainable parameter of
    `owner` (the module holding `net`) must be in a part, or it would never be trained."""
    groups = []
    for name, child in net.named_children():
        params = [p for p in child.parameters() if p.requires_grad]
        if params:
            group = {"params": params, "name": name}
            if name in lr_scale:
                group["lr"] = lr * lr_scale[name]
            groups.append(group)
    grouped = {id(p) for g in groups for p in g["params"]}
    missed = [n for n, p in owner.named_parameters() if p.requires_grad and id(p) not in grouped]
    if missed:
        raise RuntimeError(f"parameters outside the net's parts would not be trained: {missed}")
    return groups


def forget_parts(optimizers: Iterable[torch.optim.Optimizer], parts: Collection[str]) -> None:
    """Drop the optimiser state (SGD: momentum buffers) of the parameter groups named in `parts` (`part_groups`'
    names): their next step starts afresh, as if they had never been trained."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if group.get("name") in parts:
                for p in group["params"]:
                    optimizer.state.pop(p, None)


def make_optimizer(
    groups: list[dict],
    optimizer: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    fused_sgd: bool,
) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum (`SGD`) over `groups` (`check_optimizer_settings` first): torch's fused kernel
    (the same update as the per-tensor loop up to float rounding, and 3-4x faster on CPU: 1.4 against 4.0 ms a step
    for the original net's 58 tensors, 2.6 against 9.3 ms for MobileNetV2's 324, one thread), or that loop
    (`fused_sgd=False`)."""
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    implementation = {"fused": True} if fused_sgd else {"foreach": False}
    return SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **implementation)


class SGD(torch.optim.SGD):
    """torch's SGD in either implementation (`fused=True`: its fused kernel; `foreach=False`: the per-tensor loop),
    which stays the one it was built as when a state is loaded, with each momentum buffer in its parameter's layout.

    torch's `load_state_dict` does neither, and each gave a silent wrong result on resuming a run with settings that
    resuming may change (`train.RESUME_FREE`):
    - it takes every group's settings from the saved state, the implementation flags included: a run resumed with
      `model.fused_sgd` changed went on with the checkpoint's implementation. The flags are kept as built;
    - a buffer comes back in the layout it was saved in, while the fused kernel updates parameter, gradient and
      buffer as flat arrays, element i of each together (torch 2.14, ATen's FusedSGDKernel.cpp; autograd hands each
      gradient over in its parameter's layout): resumed with `model.channels_last` changed, the fused step read the
      buffers in the wrong order. Loading copies such a buffer into its parameter's layout."""

    def load_state_dict(self, state_dict: dict) -> None:
        built = [(group["fused"], group["foreach"]) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fused, foreach) in zip(self.param_groups, built):
            group["fused"], group["foreach"] = fused, foreach
            for p in group["params"]:
                buffer = self.state.get(p, {}).get("momentum_buffer")
                if buffer is not None and buffer.stride() != p.stride():
                    self.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buffer)  # p's strides: it is dense
