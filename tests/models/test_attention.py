"""Context attention: GLA against a hand computation; standard and none shapes and sums."""

from __future__ import annotations

import pytest
import torch

from glamor_lightning.models import ATTENTIONS, GlobalLocalAttention, create_attention


def _hand_gla(att: GlobalLocalAttention, v_f: torch.Tensor, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GLA written out cell by cell: concat, MLP (BatchNorm with batch statistics), softmax, sum."""
    b, d, h, w = fmap.shape
    w1, b1, w2, b2 = att.fc1.weight, att.fc1.bias, att.fc2.weight[0], att.fc2.bias[0]
    hidden = {}
    for n in range(b):
        for i in range(h):
            for j in range(w):
                x = torch.cat([v_f[n], fmap[n, :, i, j]])
                hidden[n, i, j] = torch.relu(w1 @ x + b1)
    if att.bn is not None:
        stack = torch.stack(list(hidden.values()))
        mean, var = stack.mean(0), stack.var(0, unbiased=False)
        for key, hid in hidden.items():
            hidden[key] = torch.relu((hid - mean) / torch.sqrt(var + att.bn.eps) * att.bn.weight + att.bn.bias)
    attn = torch.zeros(b, h, w)
    v_c = torch.zeros(b, d)
    for n in range(b):
        scores = torch.tensor([[float(w2 @ hidden[n, i, j] + b2) for j in range(w)] for i in range(h)])
        e = torch.exp(scores - scores.max())
        attn[n] = e / e.sum()
        for i in range(h):
            for j in range(w):
                v_c[n] += attn[n, i, j] * fmap[n, :, i, j]
    return v_c, attn


@pytest.mark.parametrize("batchnorm", [True, False])
def test_gla_matches_hand_computation(batchnorm: bool) -> None:
    torch.manual_seed(0)
    att = create_attention("gla", face_dim=3, context_dim=3, hidden=4, batchnorm=batchnorm)
    assert isinstance(att, GlobalLocalAttention) and (att.bn is not None) == batchnorm
    with torch.no_grad():  # weights set by hand: fixed, distinct values
        att.fc1.weight.copy_(torch.linspace(-1, 1, 24).view(4, 6))
        att.fc1.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        att.fc2.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 1.5]]))
        att.fc2.bias.fill_(0.3)
        if att.bn is not None:
            att.bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
            att.bn.bias.copy_(torch.tensor([0.0, 0.1, -0.1, 0.2]))
    v_f = torch.randn(2, 3)
    fmap = torch.randn(2, 3, 2, 2)
    v_c, attn = att.train()(v_f, fmap)
    with torch.no_grad():
        want_v, want_a = _hand_gla(att, v_f, fmap)
    assert v_c.shape == (2, 3) and attn.shape == (2, 2, 2)
    assert torch.allclose(attn, want_a, atol=1e-5)
    assert torch.allclose(v_c, want_v, atol=1e-5)
    assert torch.allclose(attn.sum(dim=(1, 2)), torch.ones(2))
    assert torch.allclose(v_c, torch.einsum("bhw,bdhw->bd", attn, fmap), atol=1e-6)
    assert not torch.allclose(attn, torch.full_like(attn, 0.25))  # not trivially uniform


def test_gla_depends_on_face_vector() -> None:
    torch.manual_seed(1)
    att = create_attention("gla", face_dim=8, context_dim=16, batchnorm=False)
    fmap = torch.randn(1, 16, 3, 3)
    _, a1 = att(torch.randn(1, 8), fmap)
    _, a2 = att(torch.randn(1, 8), fmap)
    assert not torch.allclose(a1, a2)


def test_gla_default_sizes_and_eval_mode() -> None:
    att = create_attention("gla", face_dim=256, context_dim=256).eval()
    assert att.fc1.in_features == 512 and att.fc1.out_features == 128 and att.fc2.in_features == 128
    assert att.bn.eps == 1e-3 and att.bn.momentum == 0.01
    v_c, attn = att(torch.rand(1, 256), torch.rand(1, 256, 7, 7))  # batch of one works in eval
    assert v_c.shape == (1, 256) and attn.shape == (1, 7, 7)


def test_gla_needs_face_vector() -> None:
    att = create_attention("gla", face_dim=4, context_dim=4)
    with pytest.raises(ValueError, match="face vector"):
        att(None, torch.rand(2, 4, 3, 3))


def test_standard_attention() -> None:
    torch.manual_seed(0)
    att = create_attention("standard", face_dim=0, context_dim=16, hidden=8)
    fmap = torch.randn(2, 16, 5, 4)
    v_c, attn = att(None, fmap)
    assert v_c.shape == (2, 16) and attn.shape == (2, 5, 4)
    assert torch.allclose(attn.sum(dim=(1, 2)), torch.ones(2))
    assert torch.allclose(v_c, torch.einsum("bhw,bdhw->bd", attn, fmap), atol=1e-5)
    scores = att.score(fmap).flatten(1)
    assert torch.allclose(attn.flatten(1), torch.softmax(scores, dim=1), atol=1e-6)


def test_no_attention_is_average_pool() -> None:
    fmap = torch.randn(2, 16, 3, 5)
    v_c, attn = create_attention("none", face_dim=0, context_dim=16)(None, fmap)
    assert torch.allclose(v_c, fmap.mean(dim=(2, 3)))
    assert torch.allclose(attn, torch.full((2, 3, 5), 1 / 15))


def test_registry() -> None:
    assert ATTENTIONS.names() == ["gla", "none", "standard"]
    with pytest.raises(RuntimeError, match="Unknown attention 'soft'; known: gla, none, standard"):
        create_attention("soft", 4, 4)
