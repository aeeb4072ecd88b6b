"""`python -m glamor_lightning.analysis.context_echo`: the context read under the image's own face and under
another class's face, on a real checkpoint and SynthCAER test split."""

from __future__ import annotations

import re

from conftest import fit_checkpoint
from glamor_lightning.analysis.context_echo import GUIDES, context_alone, main
from glamor_lightning.analysis.synth_breakdown import GROUPS


def test_context_echo_prints_a_row_per_guide_with_every_group(tiny_ckpt, capsys):
    assert main([str(tiny_ckpt)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tiny_ckpt} |")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[1] for c in cells] == list(GUIDES)
    for c in cells:
        assert len(c) == 3 + len(GROUPS)
        assert 0.0 <= float(c[2]) <= 100.0  # all images; a group without images shows "-"
        assert all(re.fullmatch(r"-|\d+\.\d", x) for x in c[3:])


def test_context_echo_refuses_a_model_whose_attention_is_not_face_guided(synth_root, tmp_path, capsys):
    ckpt = fit_checkpoint(synth_root, tmp_path / "no_attention.ckpt", attention="none")
    assert main([str(ckpt)]) == 2
    assert "not guided by the face (attention='gla' only)" in capsys.readouterr().err


def test_a_context_head_on_the_pooled_map_is_given_the_pooled_map_whatever_the_guide():
    import torch

    from glamor_lightning.models.glamor import GlamorNet

    torch.manual_seed(0)
    net = GlamorNet(aux_heads=True, context_head_input="pooled").eval()
    context_map = net.context_encoder(torch.rand(3, 3, 32, 32))
    v_f = net.face_encoder(torch.rand(3, 3, 32, 32)).mean(dim=(2, 3))
    expected = net.context_head(context_map.mean(dim=(2, 3)))
    for v_c in (net.attention(v_f, context_map)[0], torch.randn(3, context_map.shape[1])):  # any v_c: not read
        assert torch.allclose(context_alone(net, v_f, v_c, context_map), expected, atol=1e-6)
    attended = GlamorNet(aux_heads=True).eval()
    v_c = torch.randn(3, context_map.shape[1])
    assert torch.equal(context_alone(attended, v_f, v_c, context_map), attended.context_head(v_c))
