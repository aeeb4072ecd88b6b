"""Tiling max-pools (window = stride) whose backward is computed fast in bf16 on the CPU.

The original encoder pools with 2×2 windows of stride 2 after each of its first four blocks. On the CPU, in bf16 and
channels-last, torch's backward of that pooling (`max_pool2d_with_indices_backward`) is slow where the channels are
few: on the first block's 32 channels at 112×112, batch 32, it took 15-24 ms, where a zero fill of its output takes 1
(timed on an Intel Xeon with AMX, 2026-12-06). Computed as below, each layer's backward ran 1.5-2.3x faster, and the
original model's bf16 training step 1.03-1.10x (`make bench`, section `rewrites`).

When the windows tile the input (kernel = stride, no padding, no dilation), each input element lies in at most one
window, and the backward of the pooling is exactly `max_unpool2d` of the output gradient at the indices of the
maxima: the gradient of each window's maximum is put where that maximum was, zeros everywhere else (and on the rows
and columns that no window covers). `TilingMaxPool2d` computes it that way when it trains in bf16 on the CPU; the
forward (values and indices: ties go to the first maximum in scan order, as torch's) is torch's own, so outputs and
gradients are torch's, value for value (tests/models/test_maxpool.py). It saves only the indices for the backward,
where torch's own saves the input as well. Everywhere else (fp32, a GPU, inference) it is exactly `nn.MaxPool2d`.
The module has no parameters; `use_fast_max_pool` swaps the class of existing modules in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .swap import swap_class

#: the dtypes in which the unpooling backward is used (measured faster only for these: `make bench`, `rewrites`)
FAST_DTYPES = (torch.bfloat16,)


class _TilingMaxPool(torch.autograd.Function):
    """F.max_pool2d with windows that tile the input; the backward by `max_unpool2d` (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: tuple[int, int]) -> Tensor:
        y, indices = F.max_pool2d_with_indices(x, kernel, kernel)
        ctx.save_for_backward(indices)
        ctx.kernel, ctx.size = kernel, x.shape[-2:]
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        (indices,) = ctx.saved_tensors
        return F.max_unpool2d(grad, indices, ctx.kernel, ctx.kernel, output_size=ctx.size), None


class TilingMaxPool2d(nn.MaxPool2d):
    """An `nn.MaxPool2d` whose windows tile the input (kernel = stride, no padding, no dilation, floor mode) and whose
    bf16 training step on the CPU takes its backward from `max_unpool2d` (module docstring); otherwise
    `nn.MaxPool2d` itself."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype not in FAST_DTYPES or not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _TilingMaxPool.apply(x, _pair(self.kernel_size))


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def qualifies(module: nn.Module) -> bool:
    """A plain `nn.MaxPool2d` whose windows tile its input: stride = kernel (or unset), no padding, no dilation,
    floor mode, no indices returned. The case `TilingMaxPool2d` computes."""
    return type(module) is nn.MaxPool2d and tiles(module)


def tiles(m: nn.MaxPool2d) -> bool:
    """Whether the windows of max-pool `m` tile its input (stride = kernel or unset, no padding, no dilation, floor
    mode) and it returns no indices."""
    return (
        _pair(m.stride if m.stride is not None else m.kernel_size) == _pair(m.kernel_size)
        and _pair(m.padding) == (0, 0)
        and _pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


def use_fast_max_pool(model: nn.Module, enable: bool = True) -> int:
    """Makes every qualifying max-pool of `model` a `TilingMaxPool2d` (`enable=False`: an `nn.MaxPool2d` again);
    returns how many there are. The module has no parameters or buffers, so state dicts are unchanged."""
    return swap_class(model, TilingMaxPool2d, nn.MaxPool2d, qualifies, enable)
