"""The fused BN → max-pool → ReLU kernel (`models/fused_bn.py`): the maths of torch's three layers to rounding, in
fp32 and bf16, with its outputs, gradients and running statistics; torch's layers wherever it does not apply; the
original encoder with it on and off; and a clear fallback where no C compiler builds it."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from glamor_lightning.models import fused_bn
from glamor_lightning.models.encoders import OriginalEncoder, paper_order, use_fused_bn_pool_relu
from glamor_lightning.models.fused_bn import applies, bn_pool_relu, fusable_blocks
from glamor_lightning.models.maxpool import TilingMaxPool2d
from glamor_lightning.module import EmotionModule

# (channels, H × W, pool side; 1: no pool): the encoder's blocks (the kernel has loops of their own for 32, 64, 128
# and 256 channels with 2 × 2 windows), odd sizes (rows / columns in no window), no pool, other channel counts
CASES = [(32, (12, 12), 2), (64, (7, 6), 2), (256, (5, 4), 2), (6, (11, 7), 2), (8, (6, 6), 1), (16, (9, 9), 3)]


def _layers(channels, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)
    with torch.no_grad():  # some scales negative: the pooling then picks what was the smallest input
        bn.weight.copy_(torch.rand(channels, generator=g) * 3 - 1)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
    return bn, (TilingMaxPool2d(k) if k > 1 else None)


def _torch_layers(x, bn, pool):
    with torch.autocast("cpu", torch.bfloat16, enabled=x.dtype == torch.bfloat16):
        y = bn(x)
        return torch.relu_(pool(y) if pool is not None else y)


def _step(fn, x0, grad):
    x = x0.detach().requires_grad_()
    y = fn(x)
    y.backward(grad)
    return y, x.grad


@pytest.mark.parametrize("channels, hw, k", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_it_computes_torch_layers_maths(channels, hw, k, dtype, ties):
    assert fused_bn.library() is not None, "the kernel did not build on this machine"
    bn_t, pool = _layers(channels, k)
    bn_f = copy.deepcopy(bn_t)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, channels, *hw, generator=g) * 2 + 0.5
    if ties:  # few distinct values: most windows hold their maximum twice or more, which goes to the first
        x = x.round()
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, channels, hw[0] // k, hw[1] // k, generator=g).to(dtype)
    assert applies(x.requires_grad_(), bn_f)
    y_f, gx_f = _step(lambda v: bn_pool_relu(v, bn_f, pool), x, grad)
    y_t, gx_t = _step(lambda v: _torch_layers(v, bn_t, pool), x, grad)

    assert type(y_f.grad_fn).__name__ == "_BNPoolReLUBackward"  # the kernel ran, not a fallback
    assert y_f.dtype == gx_f.dtype == dtype and y_f.shape == y_t.shape
    assert y_f.is_contiguous(memory_format=torch.channels_last)
    assert gx_f.is_contiguous(memory_format=torch.channels_last)
    # fp32: float rounding; bf16: one unit in the last place of bf16 (8 bits) on the outputs, and the gradients
    # within 1 % of their largest (their sums run in another order, then round to bf16)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert (y_f.float() - y_t.float()).abs().max() <= tol * y_t.float().abs().max() + 1e-6
    assert (gx_f.float() - gx_t.float()).abs().max() <= tol * gx_t.float().abs().max() + 1e-6
    for name in ("weight", "bias"):
        got, want = getattr(bn_f, name).grad, getattr(bn_t, name).grad
        assert got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-4 * want.abs().max() + 1e-5, name
    torch.testing.assert_close(bn_f.running_mean, bn_t.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn_f.running_var, bn_t.running_var, rtol=1e-4, atol=1e-6)
    assert bn_f.num_batches_tracked.item() == bn_t.num_batches_tracked.item() == 1


def test_a_second_derivative_raises_rather_than_being_wrong():
    bn, pool = _layers(8, 2)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    (gx,) = torch.autograd.grad(bn_pool_relu(x, bn, pool).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_each_window_sends_its_gradient_to_its_first_maximum():
    """All four values of every window equal: torch's pooling takes the first in scan order, and so must the kernel
    (the batch norm's own part of the gradient is the same everywhere in a channel, so the pooled part stands out)."""
    bn, pool = _layers(4, 2)
    with torch.no_grad():  # every output above zero: the ReLU passes every pooled gradient
        bn.weight.fill_(1.0), bn.bias.fill_(10.0)
    x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).view(2, 4, 3, 3)
    x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).contiguous(memory_format=torch.channels_last)
    _, gx = _step(lambda v: bn_pool_relu(v, bn, pool), x, torch.ones(2, 4, 3, 3))
    # within a window the input is one value, so the batch norm's own part of the gradient is too: what is left after
    # taking away the window's last element (never its first maximum) is the pooled gradient, at the first element
    pooled = gx - gx[:, :, 1::2, 1::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert (pooled[:, :, 0::2, 0::2] > 0.1 * pooled.abs().max()).all()
    pooled[:, :, 0::2, 0::2] = 0
    assert pooled.abs().max() < 1e-5


@pytest.mark.parametrize(
    "case",
    ["eval", "no_grad", "nchw", "float16", "sync_batchnorm", "no_momentum", "too_many_channels", "the_contract_holds"],
)
def test_torch_layers_run_where_it_does_not_apply(case):
    bn, pool = _layers(8, 2)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    if case == "eval":
        bn.eval()
    elif case == "nchw":
        x = x.detach().contiguous().requires_grad_()
    elif case == "float16":
        x = x.detach().half().requires_grad_()
    elif case == "sync_batchnorm":
        bn = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bn))[0]
    elif case == "no_momentum":
        bn.momentum = None
    elif case == "too_many_channels":  # more than the kernel's buffers hold
        wide = fused_bn.library().bn_pool_relu_max_channels() + 1
        bn = nn.BatchNorm2d(wide)
        x = torch.randn(1, wide, 2, 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    if case == "no_grad":
        with torch.no_grad():
            assert not applies(x, bn)
        return
    if case == "the_contract_holds":  # the control for the cases above: this one's kernel applies
        assert applies(x, bn)
        return
    assert not applies(x, bn)
    if case in ("eval", "nchw", "no_momentum"):  # and the result is torch's layers', bit for bit
        want = _torch_layers(x, copy.deepcopy(bn), pool)
        assert torch.equal(bn_pool_relu(x, bn, pool), want)


def _encoder_pair():
    torch.manual_seed(0)
    fused = OriginalEncoder().to(memory_format=torch.channels_last)
    plain = copy.deepcopy(fused)
    assert use_fused_bn_pool_relu(fused, True) == 1 and use_fused_bn_pool_relu(plain, False) == 1
    return fused, plain


def test_the_encoder_trains_the_same_with_it_on_and_off():
    fused, plain = _encoder_pair()
    x = torch.rand(2, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    outs = []
    for enc in (fused, plain):
        y = enc(x)
        y.square().mean().backward()
        outs.append(y)
    assert type(outs[0].grad_fn).__name__ == "_BNPoolReLUBackward"
    assert type(outs[1].grad_fn).__name__ != "_BNPoolReLUBackward"
    # five blocks of float rounding in another order: within 1e-4 of the largest output
    assert (outs[0] - outs[1]).abs().max() <= 1e-4 * outs[1].abs().max()
    grads = dict(plain.named_parameters())
    for name, p in fused.named_parameters():
        want = grads[name].grad
        assert (p.grad - want).abs().max() <= 1e-3 * want.abs().max() + 1e-6, name
    assert fused.state_dict().keys() == plain.state_dict().keys()
    for name, buf in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[name], buf, rtol=1e-4, atol=1e-6)
    fused.load_state_dict(plain.state_dict())  # evaluation is torch's layers either way: bit for bit
    fused.eval(), plain.eval()
    assert torch.equal(fused(x), plain(x))


def test_blocks_it_fuses():
    enc = OriginalEncoder()
    blocks = fusable_blocks(enc.body)
    assert [type(layer).__name__ for layer, _, _ in blocks] == ["Conv2d"] * 5
    assert [pool is not None for _, _, pool in blocks] == [True] * 4 + [False]
    assert fusable_blocks(paper_order(enc)) is None  # ReLU before the pooling: torch's layers


def test_the_module_option_sets_it():
    assert EmotionModule().net.face_encoder.fuse_bn_pool_relu is True
    net = EmotionModule(fused_bn_pool_relu=False).net
    assert not net.face_encoder.fuse_bn_pool_relu and not net.context_encoder.fuse_bn_pool_relu


def test_without_a_compiler_training_goes_on_with_torch_layers(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("GLAMOR_CACHE_DIR", str(tmp_path))
    fused_bn.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=fused_bn.__name__):
            assert fused_bn.library() is None
        assert "kernel unavailable, training uses torch's layers" in caplog.text
        assert "no-such-compiler" in caplog.text
        fused, plain = _encoder_pair()
        x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = fused(x)
        assert type(y.grad_fn).__name__ != "_BNPoolReLUBackward"
        assert torch.equal(y, plain(x))
    finally:
        fused_bn.library.cache_clear()


def test_the_build_is_cached_by_source_compiler_and_processor(monkeypatch, tmp_path):
    monkeypatch.setenv("GLAMOR_CACHE_DIR", str(tmp_path))
    compiler = fused_bn.shutil.which("cc") or fused_bn.shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here")
    first = fused_bn._build([compiler])
    assert first.parent == tmp_path / "kernels" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert fused_bn._build([compiler]) == first and first.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind
