"""`StridedDepthwiseConv2d`: the gradients of torch's own convolution (to bf16 rounding for the input's, in bf16 on
the CPU, where it computes them its own way), torch's own everywhere else, and swapped into timm encoders without
changing their weights."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import Conv2dSame
from torch import nn

from glamor_lightning.models.depthwise import StridedDepthwiseConv2d, qualifies, use_fast_strided_depthwise
from glamor_lightning.models.encoders import create_encoder

# (channels, input H × W, kernel, stride, padding): MobileNetV2's case, odd sizes, EfficientNet's 5×5, unequal strides,
# no padding, a stride larger than the padding allows to cover
CASES = [
    (8, (12, 12), 3, 2, 1),
    (6, (11, 7), 3, 2, 1),
    (5, (14, 9), 5, 2, 2),
    (4, (9, 10), 3, (2, 1), 1),
    (4, (10, 10), 3, 3, 0),
]


def _pair(module: nn.Conv2d, shape, bf16=False):
    """The module's output and its input's and weight's gradients for a fixed input and output gradient (seed 0)."""
    x, grad = _data(module, shape)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = module(x)
    y.backward(grad.to(y.dtype))
    return y, x.grad, module.weight.grad


def _data(module: nn.Conv2d, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        out_shape = nn.functional.conv2d(x, module.weight, None, module.stride, module.padding, 1, module.groups).shape
    return x, torch.randn(out_shape, generator=g)


def _convs(channels, kernel, stride, padding, bias=False):
    torch.manual_seed(1)
    native = nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels, bias=bias)
    fast = copy.deepcopy(native)
    assert use_fast_strided_depthwise(fast) == 1 and type(fast) is StridedDepthwiseConv2d
    return native, fast


@pytest.mark.parametrize("channels, hw, kernel, stride, padding", CASES)
def test_bf16_gradients_are_torch_own_to_bf16_rounding(channels, hw, kernel, stride, padding):
    native, fast = _convs(channels, kernel, stride, padding)
    shape = (3, channels, *hw)
    y_n, gx_n, gw_n = _pair(native, shape, bf16=True)
    y_f, gx_f, gw_f = _pair(fast, shape, bf16=True)
    assert y_f.dtype == torch.bfloat16 and torch.equal(y_f, y_n)  # torch's own forward
    assert gw_f.dtype == torch.float32 and torch.equal(gw_f, gw_n)  # torch's own weight gradient, as autocast's
    assert gx_f.shape == gx_n.shape and gx_f.dtype == gx_n.dtype == torch.float32
    # each input gradient is a sum of at most k² products rounded once to bf16: within half a bf16 step of the exact
    # sum of the bf16 operands (float64), as torch's own is
    x, grad = (t.to(torch.bfloat16).double() for t in _data(native, shape))
    x.requires_grad_()
    w = native.weight.detach().to(torch.bfloat16).double()
    nn.functional.conv2d(x, w, None, native.stride, native.padding, 1, channels).backward(grad)
    bound = x.grad.abs() * 2.0**-8 + 1e-6
    assert ((gx_n.double() - x.grad).abs() <= bound).all()
    assert ((gx_f.double() - x.grad).abs() <= bound).all()
    assert (gx_f != 0).any()


def test_a_bias_gets_its_gradient():
    native, fast = _convs(4, 3, 2, 1, bias=True)
    _pair(native, (2, 4, 8, 8), bf16=True)
    _pair(fast, (2, 4, 8, 8), bf16=True)
    assert torch.allclose(fast.bias.grad, native.bias.grad, rtol=2.0**-7)


def test_fp32_and_inference_are_torch_own_bit_for_bit():
    native, fast = _convs(8, 3, 2, 1)
    for a, b in zip(_pair(native, (2, 8, 12, 12)), _pair(fast, (2, 8, 12, 12))):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    x = torch.rand(2, 8, 12, 12)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(native(x), fast(x))


def test_only_strided_depthwise_zero_padded_plain_convolutions_qualify():
    assert qualifies(nn.Conv2d(8, 8, 3, 2, 1, groups=8))
    assert not qualifies(nn.Conv2d(8, 8, 3, 1, 1, groups=8))  # stride 1: torch's own backward is fast
    assert not qualifies(nn.Conv2d(8, 16, 3, 2, 1, groups=8))  # a depth multiplier
    assert not qualifies(nn.Conv2d(8, 8, 3, 2, 1, groups=4))  # grouped, not depthwise
    assert not qualifies(nn.Conv2d(8, 8, 3, 2, 2, groups=8, dilation=2))
    assert not qualifies(nn.Conv2d(8, 8, 3, 2, 1, groups=8, padding_mode="reflect"))
    assert not qualifies(nn.Conv2d(8, 8, 3, 2, 3, groups=8))  # padding beyond kernel - 1
    assert not qualifies(Conv2dSame(8, 8, 3, 2, groups=8))  # pads at run time


def test_mobilenetv2_encoders_use_it_with_their_weights_unchanged():
    torch.manual_seed(0)
    encoder = create_encoder("mobilenetv2")
    fast = [m for m in encoder.modules() if type(m) is StridedDepthwiseConv2d]
    assert len(fast) == 4 and all(m.stride == (2, 2) and m.groups == m.in_channels for m in fast)
    keys = list(encoder.state_dict())
    native = copy.deepcopy(encoder)
    assert use_fast_strided_depthwise(native, enable=False) == 4
    assert not any(type(m) is StridedDepthwiseConv2d for m in native.modules())
    assert list(native.state_dict()) == keys
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(encoder(x), native(x))  # the forward is torch's own
    assert not any(type(m) is StridedDepthwiseConv2d for m in create_encoder("resnet18").modules())
