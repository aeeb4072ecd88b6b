"""Batch norm folded into convolutions for inference (`glamor_lightning.models.fold`): the same outputs on
every backbone, the norms gone, and a net where folding would change the result left as it is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glamor_lightning.models.fold import conv_bn_pairs, fold_batchnorm, same_outputs
from glamor_lightning.models.glamor import GlamorNet
from glamor_lightning.predict import Predictor


def trained_looking(net: nn.Module, seed: int = 0) -> nn.Module:
    """`net` in eval mode with every norm's statistics and affine parameters far from the identity, as after
    training (fresh ones are the identity map, which folding cannot get wrong)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return net.eval()


def inputs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, 96, 96, generator=g), torch.rand(batch, 3, 112, 112, generator=g)


def norms_2d(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("backbone", ["original", "mobilenetv2", "resnet18"])
def test_every_encoder_norm_is_folded_and_the_outputs_stay(backbone):
    net = trained_looking(GlamorNet(backbone=backbone))
    encoder_norms = norms_2d(net.face_encoder) + norms_2d(net.context_encoder)
    face, context = inputs()
    with torch.no_grad():
        expected = net(face, context)
    result = fold_batchnorm(net, face, context)
    assert result.net is not net and result.folded == encoder_norms > 0
    assert norms_2d(result.net.face_encoder) == norms_2d(result.net.context_encoder) == 0
    assert norms_2d(net.face_encoder) + norms_2d(net.context_encoder) == encoder_norms  # the original untouched
    face2, context2 = inputs(5)  # other inputs than the ones it was checked on
    with torch.no_grad():
        got, again = result.net(face2, context2), net(face2, context2)
        first = result.net(face, context)
    for a, b in ((again.logits, got.logits), (again.attention, got.attention), (expected.logits, first.logits)):
        assert same_outputs(a, b), float((a - b).abs().max())


class ConvOutputUsedTwice(nn.Module):
    """The convolution's output feeds the norm and, unnormalised, a skip connection: folding would change
    what the skip adds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_net_folding_would_change_is_copied_unfolded_with_a_warning():
    net = trained_looking(ConvOutputUsedTwice())
    x = torch.rand(2, 3, 8, 8)
    assert conv_bn_pairs(net, x) == [("conv", "bn")]  # looks foldable from the norm's side
    with pytest.warns(UserWarning, match=r"batch norm folding changed the net's outputs .*running it unfolded"):
        result = fold_batchnorm(net, x)
    assert result.net is not net and result.folded == 0 and result.max_diff > 1e-2
    assert isinstance(result.net.bn, nn.BatchNorm2d)
    torch.testing.assert_close(result.net(x), net(x))


def test_a_convolution_run_twice_is_not_folded():
    conv, bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
    net = trained_looking(nn.Sequential(conv, bn, conv, nn.BatchNorm2d(3)))  # one conv, two norms
    assert conv_bn_pairs(net, torch.rand(1, 3, 4, 4)) == []


def test_a_net_in_training_mode_is_refused():
    with pytest.raises(ValueError, match=r"folds a net in eval mode .*call net.eval\(\) first"):
        fold_batchnorm(GlamorNet().train(), *inputs())


def test_the_predictor_runs_the_folded_copy_with_the_modules_predictions(tiny_ckpt):
    from glamor_lightning.checkpoints import load_module

    module = load_module(tiny_ckpt)
    trained_looking(module.net)
    predictor = Predictor(module)
    assert norms_2d(predictor.net.face_encoder) == 0 and norms_2d(module.net.face_encoder) > 0
    g = torch.Generator().manual_seed(2)
    faces = torch.randint(0, 256, (4, 96, 96, 3), dtype=torch.uint8, generator=g)
    contexts = torch.randint(0, 256, (4, 112, 112, 3), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        expected = module(faces, contexts).logits
    assert same_outputs(expected, predictor.forward(faces, contexts).logits)
