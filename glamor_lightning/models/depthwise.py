"""Strided depthwise convolutions whose input gradient is computed fast in bf16 on the CPU.

MobileNetV2 (and timm's other inverted-residual nets) downsample with a 3×3 depthwise convolution of stride 2. On
the CPU, in bf16, torch's backward of that convolution for its *input* is pathologically slow: a batch of 32 at 96
channels, 56×56, took 41-47 ms against 0.7 ms for the forward and 6.8 ms in fp32; at 144 channels, 28×28, 26 ms
against 1.3 ms for a stride-1 layer of that size. So the input gradients of the four such layers of each MobileNetV2
encoder took 183 ms of a 517 ms bf16 training step (Intel Xeon with AMX, 2026-12-06; timed layer by layer and with
`torch.profiler`), and bf16 trained MobileNetV2 slower than fp32 on a processor whose bf16 matmuls run at 6× fp32's
rate. With this module the step is 1.4× faster in bf16 (`make bench`, section `rewrites`).

The input gradient of a convolution of stride s is a stride-1 convolution, with the kernel flipped, of the output
gradient spread out on the input's grid (s - 1 zeros between neighbours) and padded by kernel - 1 - padding: the
transposed convolution written out. `StridedDepthwiseConv2d` computes it that way, with the fast stride-1 kernel,
when it trains in bf16 on the CPU; its forward and its weight gradient are torch's own, and everywhere else (fp32,
where torch's own backward is the faster, a GPU, inference) it is exactly `nn.Conv2d`. The products summed are
those of torch's backward (the inserted zeros add exact zeros), in an order of the kernel's choosing, so the input
gradient agrees with torch's to bf16 rounding; in the measurements here it was bit-identical in most layers
(tests/models/test_depthwise.py). The module has the parameters and state-dict keys of the `nn.Conv2d` it replaces
(`use_fast_strided_depthwise` swaps the class of existing modules in place).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .swap import swap_class

#: the compute dtypes in which the rewritten input gradient is used (measured faster only for these)
FAST_DTYPES = (torch.bfloat16,)


class _StridedDepthwise(torch.autograd.Function):
    """F.conv2d of a depthwise, strided, zero-padded convolution without bias; the backward's input gradient by
    a stride-1 convolution (module docstring). All tensors of one dtype; autocast off inside."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        (sh, sw), (ph, pw) = ctx.stride, ctx.padding
        channels, kh, kw = x.shape[1], weight.shape[2], weight.shape[3]
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            cl = grad.is_contiguous(memory_format=torch.channels_last)
            shape = (grad.shape[0], channels, x.shape[2] + kh - 1, x.shape[3] + kw - 1)
            fmt = torch.channels_last if cl else torch.contiguous_format
            spread = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt).zero_()
            top, left = kh - 1 - ph, kw - 1 - pw
            oh, ow = grad.shape[2], grad.shape[3]
            spread[:, :, top : top + (oh - 1) * sh + 1 : sh, left : left + (ow - 1) * sw + 1 : sw] = grad
            grad_input = F.conv2d(spread, weight.flip(2, 3), None, 1, 0, 1, channels)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, ctx.stride, ctx.padding, (1, 1), False, (0, 0), channels, (False, True, False)
            )[1]
        return grad_input, grad_weight, None, None


class StridedDepthwiseConv2d(nn.Conv2d):
    """An `nn.Conv2d` (depthwise, strided, zero padding, no dilation) whose bf16 training step on the CPU takes its
    input gradient from a stride-1 convolution (module docstring); otherwise `nn.Conv2d` itself."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if dtype not in FAST_DTYPES:
            return super().forward(x)
        # what autocast does for a convolution: input and weight cast to its dtype (the cast's backward returns
        # the weight's gradient in fp32), the bias too
        with torch.autocast("cpu", enabled=False):
            y = _StridedDepthwise.apply(x.to(dtype), self.weight.to(dtype), self.stride, self.padding)
            if self.bias is not None:
                y = y + self.bias.to(dtype).view(1, -1, 1, 1)
        return y


def qualifies(module: nn.Module) -> bool:
    """A plain `nn.Conv2d` that is depthwise (one input channel per output channel, as many groups as channels),
    strided, zero-padded by at most kernel - 1 on each side, without dilation: the case `StridedDepthwiseConv2d`
    computes."""
    if type(module) is not nn.Conv2d:  # subclasses (e.g. timm's Conv2dSame) pad in their own way
        return False
    c = module
    return (
        c.groups == c.in_channels == c.out_channels
        and c.stride != (1, 1)
        and c.dilation == (1, 1)
        and c.padding_mode == "zeros"
        and not isinstance(c.padding, str)
        and all(0 <= p < k for p, k in zip(c.padding, c.kernel_size))
    )


def use_fast_strided_depthwise(model: nn.Module, enable: bool = True) -> int:
    """Makes every qualifying convolution of `model` a `StridedDepthwiseConv2d` (`enable=False`: an `nn.Conv2d`
    again); returns how many there are. Parameters, buffers and state-dict keys are unchanged."""
    return swap_class(model, StridedDepthwiseConv2d, nn.Conv2d, qualifies, enable)
