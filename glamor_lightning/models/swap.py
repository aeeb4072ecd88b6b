"""Swapping the class of existing modules in place, for rewrites that keep a module's parameters and state-dict keys
but compute its training step another way (`depthwise.StridedDepthwiseConv2d`, `maxpool.TilingMaxPool2d`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def swap_class(
    model: nn.Module,
    fast: type[nn.Module],
    plain: type[nn.Module],
    qualifies: Callable[[nn.Module], bool],
    enable: bool,
) -> int:
    """Makes every module of `model` that `qualifies` (a `plain` one) or already is `fast` a `fast` one (`enable`) or
    a `plain` one again (not `enable`); returns how many there are. `fast` must subclass `plain` without adding
    parameters or buffers, so that nothing but the forward changes."""
    found = 0
    for module in model.modules():
        if type(module) is fast or qualifies(module):
            module.__class__ = fast if enable else plain
            found += 1
    return found
