"""`TilingMaxPool2d`: torch's own max-pool outputs and gradients, value for value, in bf16 on the CPU (where it takes
its backward from `max_unpool2d`), torch's own everywhere else, and swapped into the original encoder."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from glamor_lightning.models.encoders import create_encoder
from glamor_lightning.models.maxpool import TilingMaxPool2d, qualifies, use_fast_max_pool

# (channels, input H × W, kernel): the original encoder's case, odd sizes (the last row / column in no window),
# unequal sides, 3×3 windows
CASES = [(32, (12, 12), 2), (6, (11, 7), 2), (5, (9, 13), 3), (4, (10, 10), (2, 3))]


def _pools(kernel):
    native = nn.MaxPool2d(kernel)
    fast = copy.deepcopy(native)
    assert use_fast_max_pool(fast) == 1 and type(fast) is TilingMaxPool2d
    return native, fast


def _run(module, x, grad, channels_last=True):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt).requires_grad_()
    y = module(x)
    y.backward(grad)
    return y, x.grad


@pytest.mark.parametrize("channels, hw, kernel", CASES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_bf16_outputs_and_gradients_are_torch_own(channels, hw, kernel, channels_last, ties):
    native, fast = _pools(kernel)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, channels, *hw, generator=g)
    if ties:  # few distinct values: most windows hold their maximum twice or more, which goes to the first
        x = (x * 2).round()
    x = x.to(torch.bfloat16)
    with torch.no_grad():
        grad = torch.randn(native(x).shape, generator=g).to(torch.bfloat16)
    y_n, gx_n = _run(native, x, grad, channels_last)
    y_f, gx_f = _run(fast, x, grad, channels_last)
    assert y_f.dtype == gx_f.dtype == torch.bfloat16
    assert torch.equal(y_f, y_n) and torch.equal(gx_f, gx_n)
    assert (gx_f != 0).sum() == grad.numel()  # each window's gradient lands once, nowhere else
    assert gx_f.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_it_computes_its_own_backward_in_bf16_only():
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    _, fast = _pools(2)
    assert type(fast(x).grad_fn).__name__ == "_TilingMaxPoolBackward"
    assert type(fast(x.detach().float().requires_grad_()).grad_fn).__name__ == "MaxPool2DWithIndicesBackward0"


def test_fp32_and_inference_are_torch_own_bit_for_bit():
    native, fast = _pools(2)
    x, grad = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 6, 6)
    for a, b in zip(_run(native, x, grad), _run(fast, x, grad)):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(native(x.bfloat16()), fast(x.bfloat16()))


def test_only_plain_tiling_pools_qualify():
    assert qualifies(nn.MaxPool2d(2)) and qualifies(nn.MaxPool2d(3, 3)) and qualifies(nn.MaxPool2d((2, 3)))
    assert not qualifies(nn.MaxPool2d(3, 2, 1))  # overlapping windows (ResNet's stem): an input in two windows
    assert not qualifies(nn.MaxPool2d(2, 1))
    assert not qualifies(nn.MaxPool2d(2, padding=1))
    assert not qualifies(nn.MaxPool2d(2, dilation=2))
    assert not qualifies(nn.MaxPool2d(2, ceil_mode=True))  # a partial window at the edge
    assert not qualifies(nn.MaxPool2d(2, return_indices=True))
    assert not qualifies(nn.AvgPool2d(2))


def test_the_original_encoder_uses_it_with_its_weights_unchanged():
    torch.manual_seed(0)
    encoder = create_encoder("original")
    fast = [m for m in encoder.modules() if type(m) is TilingMaxPool2d]
    assert len(fast) == 4
    keys = list(encoder.state_dict())
    native = copy.deepcopy(encoder)
    assert use_fast_max_pool(native, enable=False) == 4
    assert not any(type(m) is TilingMaxPool2d for m in native.modules())
    assert list(native.state_dict()) == keys
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    grads = []
    for model in (encoder, native):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        y.float().square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))  # the same gradients reach every weight
    for name in ("mobilenetv2", "resnet18"):
        assert not any(type(m) is TilingMaxPool2d for m in create_encoder(name).modules())
