"""Encoders: shapes, BatchNorm settings, normalisation, registry, pretrained weights offline."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import glamor_lightning.models.pretrained as pretrained
from glamor_lightning.models import ENCODERS, Encoder, OriginalEncoder, Registry, TimmEncoder, create_encoder
from glamor_lightning.models.encoders import paper_order, set_hardtanh_inplace

TIMM_ALIASES = {"mobilenetv2": "mobilenetv2_100", "resnet18": "resnet18"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and empty weight caches, whatever the machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_registry_names() -> None:
    assert {"original", "mobilenetv2", "resnet18"} <= set(ENCODERS.names())
    assert "original" in ENCODERS and "nope" not in ENCODERS


def test_registry_decorator_plain_call_and_errors() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("a")
    def make_a(x: int = 1) -> tuple[str, int]:
        return ("a", x)

    reg.register("b", lambda: "b")
    assert reg.create("a", x=3) == ("a", 3) and reg.create("b") == "b"
    assert reg.names() == ["a", "b"] and len(reg) == 2
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", make_a)
    with pytest.raises(RuntimeError, match=r"Unknown widget 'c'; known: a, b"):
        reg.create("c")


@pytest.mark.parametrize(("size", "side"), [(96, 6), (112, 7)])
def test_original_shapes(size: int, side: int) -> None:
    enc = create_encoder("original")
    assert isinstance(enc, OriginalEncoder) and enc.out_channels == 256
    assert enc(torch.rand(2, 3, size, size)).shape == (2, 256, side, side)


def test_original_layers_match_keras_model() -> None:
    enc = create_encoder("original")
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert len(bns) == 5 and all(b.eps == 1e-3 and b.momentum == 0.01 for b in bns)
    assert sum(isinstance(m, nn.MaxPool2d) for m in enc.modules()) == 4
    assert isinstance(list(enc.body)[-1], nn.ReLU)  # no pooling after block 5


@pytest.mark.parametrize("bf16", [False, True])
def test_original_pool_before_relu_is_bit_identical_to_the_papers_order(bf16: bool) -> None:
    torch.manual_seed(0)
    enc = create_encoder("original").to(memory_format=torch.channels_last)
    paper = paper_order(enc)
    kinds = [type(m).__name__ for m in enc.body][:8]
    # the speed order, not the paper's (the pools take their bf16 backward from unpooling: models/maxpool.py)
    assert kinds == ["Conv2d", "BatchNorm2d", "TilingMaxPool2d", "ReLU"] * 2
    assert [type(m).__name__ for m in paper][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "TilingMaxPool2d"]
    # state-dict keys are the paper order's (checkpoints and the authors' import name body.0, body.1, body.4...)
    assert list(enc.body.state_dict()) == list(paper.state_dict())
    assert "4.weight" in enc.body.state_dict() and "5.running_var" in enc.body.state_dict()
    x = torch.rand(4, 3, 32, 32).round(decimals=1)  # coarse values: ties inside pooling windows
    x = x.contiguous(memory_format=torch.channels_last)
    grads, outs = [], []
    for net in (enc.body, paper):
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        out.float().square().sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in net.parameters()])
    assert (outs[0] == 0).any() and (outs[0] > 0).any()  # the ReLU cut something: the order mattered to test
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_original_uses_no_normalisation() -> None:
    enc = create_encoder("original")
    assert enc.mean.shape == enc.std.shape == (1, 3, 1, 1)
    assert torch.equal(enc.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(enc.std, torch.ones(1, 3, 1, 1))
    assert "mean" not in enc.state_dict() and "std" not in enc.state_dict()


def test_original_spends_no_pass_on_its_identity_normalisation() -> None:
    """Mean 0 and std 1 change nothing: the encoder feeds its input to its layers as it is, bit for bit, without the
    subtraction and division (two passes over each input)."""
    enc = create_encoder("original").eval()
    assert not enc.normalises and create_encoder("mobilenetv2").normalises
    x = torch.rand(2, 3, 48, 48)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = enc(x)
    ops = {e.key for e in prof.key_averages()}
    assert not ops & {"aten::sub", "aten::div", "aten::sub_", "aten::div_"}, ops
    assert torch.equal(y, enc.features((x - enc.mean) / enc.std))


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_timm_shapes_follow_feature_info(name: str) -> None:
    enc = create_encoder(name)
    ref = timm.create_model(TIMM_ALIASES[name], features_only=True)
    assert isinstance(enc, TimmEncoder) and enc.model_name == TIMM_ALIASES[name]
    assert enc.out_channels == ref.feature_info.channels()[-1]
    reduction = ref.feature_info.reduction()[-1]
    for size in (96, 112):
        side = math.ceil(size / reduction)
        assert enc(torch.rand(2, 3, size, size)).shape == (2, enc.out_channels, side, side)


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_timm_normalisation_is_pretrained_cfg_and_applied(name: str) -> None:
    enc = create_encoder(name).eval()
    cfg = timm.create_model(TIMM_ALIASES[name]).pretrained_cfg
    assert torch.allclose(enc.mean.flatten(), torch.tensor(cfg["mean"]))
    assert torch.allclose(enc.std.flatten(), torch.tensor(cfg["std"]))
    x = torch.rand(1, 3, 64, 64)
    expected = enc.model((x - enc.mean) / enc.std)[-1]
    assert torch.allclose(enc(x), expected)


def test_any_timm_model_name() -> None:
    name = "resnet10t"
    assert name not in ENCODERS and timm.is_model(name)
    enc = create_encoder(name)
    assert isinstance(enc, Encoder) and enc.out_channels == enc.model.feature_info.channels()[-1]
    assert enc(torch.rand(1, 3, 64, 64)).shape[1] == enc.out_channels


def test_unknown_backbone() -> None:
    with pytest.raises(RuntimeError, match="Unknown backbone 'no_such_net'.*original.*timm"):
        create_encoder("no_such_net")


def test_pretrained_offline_fails_fast_naming_the_option() -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"model\.pretrained_path") as err:
        create_encoder("resnet18", pretrained=True)
    assert time.monotonic() - start < 5
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_pretrained_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes: list[str] = []
    monkeypatch.setattr(pretrained, "hub_reachable", lambda: probes.append("hub") or False)
    with pytest.raises(RuntimeError, match=r"unreachable.*model\.pretrained_path"):
        create_encoder("resnet18", pretrained=True)
    assert probes == ["hub"]  # the answer came from the (patched) probe, not from a real network wait


def test_original_has_no_hub_weights() -> None:
    with pytest.raises(RuntimeError, match=r"model\.pretrained_path"):
        create_encoder("original", pretrained=True)


def _assert_weights_equal(enc: TimmEncoder, sd: dict[str, torch.Tensor]) -> None:
    got = enc.model.state_dict()
    shared = [k for k in got if k in sd]
    assert len(shared) == len(got)  # features_only keeps timm's names; only the head is dropped
    assert all(torch.equal(got[k], sd[k]) for k in shared)


def test_pretrained_path_loads_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = timm.create_model("resnet18").state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    enc = create_encoder("resnet18", pretrained_path=str(path))
    _assert_weights_equal(enc, sd)
    assert not torch.equal(create_encoder("resnet18").model.conv1.weight, sd["conv1.weight"])


def test_pretrained_weights_from_local_hf_cache(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    repo = tmp_path / "hf" / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(sd, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    _assert_weights_equal(create_encoder("resnet18", pretrained=True), sd)


def test_pretrained_path_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    for name in ("resnet18", "original"):
        with pytest.raises(FileNotFoundError, match="nope.pth"):
            create_encoder(name, pretrained_path=missing)


def test_original_pretrained_path_round_trip(tmp_path: Path) -> None:
    src = create_encoder("original")
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    assert set(pretrained.load_state_dict(path)) == set(src.state_dict())
    dst = create_encoder("original", pretrained_path=path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_mobilenetv2_relu6_runs_out_of_place_with_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv2").to(memory_format=torch.channels_last)
    relu6 = [m for m in enc.modules() if isinstance(m, nn.Hardtanh)]
    assert len(relu6) == 34 and not any(m.inplace for m in relu6)  # in place, autograd would clone each input
    in_place = copy.deepcopy(enc)
    assert set_hardtanh_inplace(in_place, True) == 34
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for net in (enc, in_place):
        out = net(x)
        out.square().sum().backward()
        outs.append(out)
        grads.append([p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
