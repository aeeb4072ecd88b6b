"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm2d is a per-channel affine map, y = (x - mean) · γ / √(var + ε) + β, so when its
input is the output of a Conv2d it can be merged into that convolution's weights and bias and dropped. A
photo's prediction then runs one layer fewer per block: MobileNetV2 has 52 convolutions, each with its norm
(`Predictor` runs the folded copy; its gain: `make bench BENCH_ARGS="--only detect"`, `fold_ms`).

Which norm follows which convolution is read from one forward pass, not from layer names, so every
backbone of the registry (ours, timm's) is folded the same way: a norm is folded into a convolution when
the norm's input is that convolution's output tensor and each of the two runs once per forward. timm's
`BatchNormAct2d` (a norm with its activation inside) keeps its dropout and activation. The folded copy's
output is compared with the original's on the example inputs; when they differ (a convolution's output
also used elsewhere, say), an unfolded copy is returned with a warning: folding never changes a prediction.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .depthwise import StridedDepthwiseConv2d

#: the convolution types a following norm is folded into (`StridedDepthwiseConv2d` is an nn.Conv2d in inference)
FOLDABLE_CONVS = (nn.Conv2d, StridedDepthwiseConv2d)

#: the folded copy's outputs may differ from the original's by this share of their largest magnitude (at least
#: 1): fp32 rounding of the merged weights, compounded over a deep net's layers (MobileNetV2 with trained-like
#: statistics: up to 5e-4), where a wrong fold moves outputs by their own size
TOLERANCE = 1e-3


@dataclass
class Folded:
    """The net to run (a copy: folded, or as it was when folding did not check out) and what was done."""

    net: nn.Module
    folded: int  #: norms merged into their convolutions (0: `net` is an unfolded copy)
    max_diff: float  #: largest difference of the checked outputs, folded against original


def conv_bn_pairs(net: nn.Module, *example_inputs) -> list[tuple[str, str]]:
    """(convolution, norm) module names where the norm's input is the convolution's output, found by
    running `net` once (in eval mode) on `example_inputs`."""
    made_by: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv name, the tensor, kept alive)
    pairs: list[tuple[str, str]] = []
    calls: Counter[str] = Counter()
    hooks = []

    def after_conv(name):
        def hook(_module, _inputs, output):
            calls[name] += 1
            made_by[id(output)] = (name, output)

        return hook

    def before_norm(name):
        def hook(_module, inputs):
            calls[name] += 1
            conv = made_by.get(id(inputs[0]))
            if conv is not None and conv[1] is inputs[0]:
                pairs.append((conv[0], name))

        return hook

    for name, module in net.named_modules():
        if type(module) in FOLDABLE_CONVS:
            hooks.append(module.register_forward_hook(after_conv(name)))
        elif foldable_norm(module):
            hooks.append(module.register_forward_pre_hook(before_norm(name)))
    try:
        with torch.no_grad():
            net(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return [(c, n) for c, n in pairs if calls[c] == 1 and calls[n] == 1]


def foldable_norm(module: nn.Module) -> bool:
    """A BatchNorm2d with running statistics (or timm's BatchNormAct2d, which adds dropout and an activation)."""
    plain = type(module) is nn.BatchNorm2d
    with_act = isinstance(module, nn.BatchNorm2d) and hasattr(module, "act") and hasattr(module, "drop")
    return (plain or with_act) and module.running_mean is not None and module.running_var is not None


def merge(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Fold `norm`'s eval-mode affine map into `conv`'s weight and bias, in place."""
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        bias = (bias - norm.running_mean) * scale
        if norm.bias is not None:
            bias = bias + norm.bias
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias)


def what_remains(norm: nn.Module) -> nn.Module:
    """What replaces a folded norm: nothing, or timm's dropout and activation."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(norm.drop, norm.act)


def fold_batchnorm(net: nn.Module, *example_inputs) -> Folded:
    """An eval-mode copy of `net` with every foldable norm merged into its convolution (see the module's
    docstring); `net` itself is not changed, so the copy can be changed further (e.g. its memory format).
    `example_inputs` are what `net` takes (any values: they only find the pairs and check the result)."""
    if net.training:
        raise ValueError("fold_batchnorm folds a net in eval mode (running statistics): call net.eval() first")
    pairs = conv_bn_pairs(net, *example_inputs)
    folded = copy.deepcopy(net)
    for conv_name, norm_name in pairs:
        norm = folded.get_submodule(norm_name)
        merge(folded.get_submodule(conv_name), norm)
        parent, _, child = norm_name.rpartition(".")
        setattr(folded.get_submodule(parent), child, what_remains(norm))
    with torch.no_grad():
        expected, got = _outputs(net(*example_inputs)), _outputs(folded(*example_inputs))
    max_diff = max((float((a - b).abs().max()) for a, b in zip(expected, got)), default=0.0)
    if len(expected) != len(got) or not all(same_outputs(a, b) for a, b in zip(expected, got)):
        warnings.warn(
            f"batch norm folding changed the net's outputs (max difference {max_diff:.3g}): running it unfolded",
            stacklevel=2,
        )
        return Folded(copy.deepcopy(net), 0, max_diff)
    return Folded(folded, len(pairs), max_diff)


def same_outputs(expected: torch.Tensor, got: torch.Tensor) -> bool:
    """Whether `got` is `expected` but for rounding (`TOLERANCE`)."""
    if expected.shape != got.shape:
        return False
    if not expected.numel():
        return True
    scale = max(1.0, float(expected.abs().max()))
    return float((expected - got).abs().max()) <= TOLERANCE * scale


def _outputs(out) -> list[torch.Tensor]:
    """The float tensors of a net's output (a tensor, or a tuple such as `GlamorOutput`)."""
    values = [out] if isinstance(out, torch.Tensor) else list(out)
    return [v.float() for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
