"""Mechanics of the remedies for a collapsing fusion gate: modality dropout, gate temperature and floor, the
gate's entropy penalty, the auxiliary losses (issue 17)."""

from __future__ import annotations

import math

import pytest
import torch

from glamor_lightning.losses import gate_negentropy
from glamor_lightning.models.fusion import FusionNet, create_fusion
from glamor_lightning.models.glamor import GlamorNet
from glamor_lightning.models.modality_dropout import drop_modalities
from glamor_lightning.module import EmotionModule


def fusion_inputs(net: GlamorNet, batch: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """The (v_f, v_c) the fusion receives in one forward pass of `net` on random images."""
    seen = {}
    hook = net.fusion.register_forward_pre_hook(lambda module, args: seen.setdefault("args", args))
    try:
        net(torch.rand(batch, 3, 16, 16), torch.rand(batch, 3, 16, 16))
    finally:
        hook.remove()
    return seen["args"]


def test_modality_dropout_zeroes_whole_branches_at_the_set_rate_in_training_only():
    torch.manual_seed(0)
    net = GlamorNet(modality_dropout=0.3).train()
    v_f, v_c = fusion_inputs(net)
    face_gone, context_gone = (v_f == 0).all(dim=1), (v_c == 0).all(dim=1)
    assert not (face_gone & context_gone).any()  # never both
    assert face_gone.float().mean() == pytest.approx(0.15, abs=0.03)  # p/2 each, 2,000 samples
    assert context_gone.float().mean() == pytest.approx(0.15, abs=0.03)
    v_f, v_c = fusion_inputs(net.eval(), batch=200)
    assert (v_f != 0).any(dim=1).all() and (v_c != 0).any(dim=1).all()


def test_modality_dropout_drops_whole_vectors_and_keeps_the_other_branch_at_scale():
    torch.manual_seed(1)
    v_f, v_c = torch.ones(1000, 4), torch.full((1000, 4), 2.0)
    d_f, d_c = drop_modalities(v_f, v_c, 0.5)
    assert set(d_f.unique().tolist()) == {0.0, 1.0} and set(d_c.unique().tolist()) == {0.0, 2.0}


def test_modality_dropout_needs_two_branches():
    with pytest.raises(ValueError, match="set modality_dropout=0"):
        GlamorNet(inputs="face", attention="none", fusion="none", modality_dropout=0.2)


@pytest.mark.parametrize("floor", [0.0, 0.1, 0.25])
def test_the_gate_floor_bounds_each_weight(floor):
    fusion = FusionNet(4, 4, hidden=8, floor=floor)
    with torch.no_grad():  # a scorer that closes the context gate as far as a softmax can
        fusion.context_score[-1].bias.fill_(-1e4)
    _, weights = fusion(torch.rand(5, 4), torch.rand(5, 4))
    assert torch.allclose(weights[:, 1], torch.full((5,), floor), atol=1e-6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))


def test_the_gate_temperature_divides_the_scores():
    torch.manual_seed(2)
    cold, hot = FusionNet(4, 4, hidden=8), FusionNet(4, 4, hidden=8, temperature=4.0)
    hot.load_state_dict(cold.state_dict())
    v_f, v_c = torch.rand(3, 4), torch.rand(3, 4)
    scores = torch.cat([cold.face_score(v_f), cold.context_score(v_c)], dim=1)
    assert torch.allclose(hot(v_f, v_c)[1], torch.softmax(scores / 4.0, dim=1), atol=1e-6)


def test_gate_settings_on_a_fusion_without_gate_are_refused():
    with pytest.raises(ValueError, match="fusion 'add' has no gate"):
        create_fusion("add", 4, 4, floor=0.1)
    with pytest.raises(ValueError, match="gate_entropy regularises the fusion net's gate"):
        EmotionModule(fusion="concat", gate_entropy=0.1)


def test_gate_negentropy_is_log_half_when_balanced_and_zero_when_closed():
    assert float(gate_negentropy(torch.tensor([[0.5, 0.5]]))) == pytest.approx(math.log(0.5))
    assert float(gate_negentropy(torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)


def test_aux_loss_weight_counts_the_auxiliary_heads_in_every_step():
    assert EmotionModule(aux_heads=True, aux_loss_weight=0.5).loss_weights == {
        "fused": 1.0,
        "face": 0.5,
        "context": 0.5,
    }
    with pytest.raises(ValueError, match="set aux_heads=true"):
        EmotionModule(aux_loss_weight=0.5)
