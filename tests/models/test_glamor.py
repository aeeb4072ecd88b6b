"""GlamorNet: the authors' parameter count, shapes per backbone and input setting, strict settings, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glamor_lightning.models import GlamorNet, GlamorOutput, OriginalEncoder


def _images(b: int = 2, face: int = 96, context: int = 112) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(b, 3, face, face), torch.rand(b, 3, context, context)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_original_glamor_net_has_the_authors_parameter_count() -> None:
    model = GlamorNet()  # original backbone, GLA with BatchNorm, fusion_net, both inputs
    assert _trainable(model) == 2_158_602


def test_gla_without_batchnorm_drops_its_256_parameters() -> None:
    assert _trainable(GlamorNet(gla_batchnorm=False)) == 2_158_602 - 256


def test_original_output() -> None:
    torch.manual_seed(0)
    out = GlamorNet()(*_images())
    assert isinstance(out, GlamorOutput)
    assert out.logits.shape == (2, 7) and out.attention.shape == (2, 7, 7) and out.fusion_weights.shape == (2, 2)
    assert torch.allclose(out.attention.sum(dim=(1, 2)), torch.ones(2))
    assert torch.allclose(out.fusion_weights.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet18"])
def test_timm_backbones(backbone: str) -> None:
    model = GlamorNet(backbone=backbone, num_classes=5).eval()
    fmap = model.context_encoder(torch.rand(1, 3, 112, 112))
    out = model(*_images())
    assert out.logits.shape == (2, 5)
    assert out.attention.shape == (2, *fmap.shape[2:])
    assert model.fusion.out_features == 2 * model.face_encoder.out_channels == 2 * fmap.shape[1]
    assert out.fusion_weights.shape == (2, 2)


def test_encoders_have_separate_weights() -> None:
    model = GlamorNet()
    assert isinstance(model.face_encoder, OriginalEncoder) and isinstance(model.context_encoder, OriginalEncoder)
    assert not set(map(id, model.face_encoder.parameters())) & set(map(id, model.context_encoder.parameters()))


SETTINGS = [
    # inputs, attention, fusion, has face encoder, has context encoder, attention map side
    ("face", "none", "none", True, False, 1),
    ("context", "none", "none", False, True, 7),
    ("context", "standard", "none", False, True, 7),
    ("context", "gla", "none", True, True, 7),
    ("context_visible", "gla", "none", True, True, 7),
    ("both", "none", "fusion_net", True, True, 7),
    ("both", "standard", "concat", True, True, 7),
    ("both", "gla", "add", True, True, 7),
    ("both", "gla", "max", True, True, 7),
]


@pytest.mark.parametrize(("inputs", "attention", "fusion", "has_face", "has_context", "side"), SETTINGS)
def test_input_settings(inputs: str, attention: str, fusion: str, has_face: bool, has_context: bool, side: int) -> None:
    torch.manual_seed(0)
    model = GlamorNet(inputs=inputs, attention=attention, fusion=fusion)
    assert model.uses_face == has_face and model.uses_context == has_context
    assert model.masks_face == (inputs != "context_visible")
    face, context = _images()
    out = model(face if has_face else None, context if has_context else None)
    assert out.logits.shape == (2, 7)
    assert out.attention.shape == (2, side, side)
    assert torch.allclose(out.attention.sum(dim=(1, 2)), torch.ones(2))
    assert (out.fusion_weights is not None) == (fusion == "fusion_net")
    # the classifier sees v_f, v_c or their fusion: 256 or 512 features for the original encoder
    width = 512 if fusion in ("fusion_net", "concat") else 256
    assert model.classifier[0].in_features == width


def test_context_only_classifies_the_context_vector() -> None:
    torch.manual_seed(0)
    model = GlamorNet(inputs="context", attention="gla", fusion="none").eval()
    face, context = _images(1)
    feats = model.features(face, context)
    assert feats.face is not None and feats.context is not None  # v_f guides GLA ...
    out = model(face, context)
    assert torch.allclose(out.logits, model.classifier(feats.context))  # ... but is not classified
    assert out.fusion_weights is None
    other_face = model.face_encoder(torch.rand(1, 3, 96, 96)).mean(dim=(2, 3))
    _, attn_other_face = model.attention(other_face, model.context_encoder(context))
    assert not torch.allclose(out.attention, attn_other_face)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(inputs="face"), r"inputs='face'.*attention='none'.*fusion='none'"),
        (dict(inputs="face", attention="standard", fusion="none"), r"attention='none' \(got 'standard'\)"),
        (dict(inputs="context"), r"fusion='none' \(got 'fusion_net'\)"),
        (dict(inputs="context_visible", fusion="add"), r"fusion='none' \(got 'add'\)"),
        (dict(inputs="both", fusion="none"), r"inputs='both'.*add, concat, fusion_net, max"),
        (dict(inputs="faces"), r"inputs must be one of face, context, context_visible, both; got 'faces'"),
        (dict(num_classes=0), r"num_classes"),
    ],
)
def test_invalid_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GlamorNet(**kwargs)


def test_unknown_component_names() -> None:
    with pytest.raises(RuntimeError, match="Unknown attention 'soft'"):
        GlamorNet(attention="soft")
    with pytest.raises(RuntimeError, match="Unknown fusion 'mean'"):
        GlamorNet(fusion="mean")
    with pytest.raises(RuntimeError, match="Unknown backbone 'vgg_nope'"):
        GlamorNet(backbone="vgg_nope")


def test_missing_needed_input() -> None:
    with pytest.raises(ValueError, match="context image"):
        GlamorNet()(torch.rand(2, 3, 96, 96), None)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # both, gla, fusion_net
        dict(inputs="context", attention="gla", fusion="none"),  # face encoder trained through the GLA guide
        dict(inputs="face", attention="none", fusion="none"),
        dict(inputs="both", attention="standard", fusion="concat"),
    ],
)
def test_every_parameter_gets_a_gradient(kwargs: dict) -> None:
    torch.manual_seed(0)
    model = GlamorNet(**kwargs).train()
    out = model(*_images(b=4))
    nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    # The bias of the last score layer shifts every cell's score alike, and a softmax ignores a
    # shift: its gradient is zero by design (it is kept: the authors' model has it too).
    shift_only = {"attention.fc2.bias", "attention.score.3.bias"}
    dead = [n for n, g in grads.items() if n not in shift_only and not g.abs().sum() > 0]
    assert not dead, dead
    assert all(grads[n].abs().max() < 1e-6 for n in shift_only & grads.keys())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_any_input_size() -> None:
    model = GlamorNet().eval()
    out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 171))
    assert out.logits.shape == (1, 7) and out.attention.shape == (1, 8, 10)


def test_eval_is_deterministic_and_dropout_in_classifier() -> None:
    model = GlamorNet(dropout=0.3).eval()
    assert model.classifier[2].p == 0.3 and model.classifier[3].out_features == 7
    face, context = _images()
    assert torch.equal(model(face, context).logits, model(face, context).logits)


def test_state_dict_round_trip_from_config() -> None:
    model = GlamorNet(inputs="context", attention="standard", fusion="none")
    clone = GlamorNet(**model.config)
    clone.load_state_dict(model.state_dict())  # strict: same parts, same names


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(aux_heads=True),
        dict(),
        dict(inputs="face", attention="none", fusion="none"),
        dict(inputs="context", attention="standard", fusion="none"),
        dict(inputs="context_visible", fusion="none"),
    ],
)
def test_parts_are_the_top_level_children(kwargs: dict) -> None:
    """`GlamorNet.PARTS` names its top-level modules (what staged training freezes and what the optimiser
    groups are named after), in order; every setting has a subset of them and nothing else."""
    names = [name for name, _ in GlamorNet(**kwargs).named_children()]
    assert names == [p for p in GlamorNet.PARTS if p in names]
    if kwargs == dict(aux_heads=True):
        assert names == list(GlamorNet.PARTS)
