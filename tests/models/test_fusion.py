"""Fusion modules: fusion_net weighting, element-wise ablations, the single-branch pass-through."""

from __future__ import annotations

import pytest
import torch

from glamor_lightning.models import FUSIONS, FusionNet, create_fusion


def test_fusion_net_weights_and_output() -> None:
    torch.manual_seed(0)
    fusion = create_fusion("fusion_net", face_dim=6, context_dim=4, hidden=8)
    assert isinstance(fusion, FusionNet) and fusion.out_features == 10
    v_f, v_c = torch.randn(3, 6), torch.randn(3, 4)
    fused, weights = fusion(v_f, v_c)
    assert fused.shape == (3, 10) and weights.shape == (3, 2)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    s = torch.cat([fusion.face_score(v_f), fusion.context_score(v_c)], dim=1)
    assert torch.allclose(weights, torch.softmax(s, dim=1))
    w_f, w_c = weights[:, :1], weights[:, 1:]
    assert torch.allclose(fused, torch.cat([w_f * v_f, w_c * v_c], dim=1))


def test_fusion_net_default_hidden() -> None:
    fusion = create_fusion("fusion_net", 256, 256)
    assert fusion.face_score[0].out_features == 128 and fusion.context_score[2].out_features == 1


def test_elementwise_and_concat_values() -> None:
    v_f = torch.tensor([[1.0, -2.0, 3.0]])
    v_c = torch.tensor([[0.5, 4.0, -1.0]])
    expected = {
        "add": torch.tensor([[1.5, 2.0, 2.0]]),
        "max": torch.tensor([[1.0, 4.0, 3.0]]),
        "concat": torch.tensor([[1.0, -2.0, 3.0, 0.5, 4.0, -1.0]]),
    }
    for name, want in expected.items():
        fusion = create_fusion(name, 3, 3)
        fused, weights = fusion(v_f, v_c)
        assert weights is None and fusion.out_features == want.shape[1]
        assert torch.equal(fused, want), name
        assert not list(fusion.parameters())


@pytest.mark.parametrize("name", ["add", "max"])
def test_elementwise_needs_equal_dims(name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'.*equal.*256 and 512"):
        create_fusion(name, 256, 512)


def test_concat_unequal_dims() -> None:
    fused, _ = create_fusion("concat", 2, 5)(torch.ones(4, 2), torch.zeros(4, 5))
    assert fused.shape == (4, 7)


def test_none_passes_the_single_branch() -> None:
    v = torch.randn(2, 5)
    face_only = create_fusion("none", face_dim=5, context_dim=0)
    assert face_only.out_features == 5 and face_only(v, None)[0] is v
    context_only = create_fusion("none", face_dim=0, context_dim=5)
    fused, weights = context_only(None, v)
    assert fused is v and weights is None
    with pytest.raises(ValueError, match="exactly one"):
        create_fusion("none", 5, 5)


def test_registry() -> None:
    assert FUSIONS.names() == ["add", "concat", "fusion_net", "max", "none"]
    with pytest.raises(RuntimeError, match="Unknown fusion 'mean'"):
        create_fusion("mean", 3, 3)
