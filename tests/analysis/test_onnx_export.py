"""ONNX export: onnxruntime gives PyTorch's logits (max |diff| ≤ 1e-4) for every registered backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fit_checkpoint
from glamor_lightning.checkpoints import load_module
from glamor_lightning.cli import main
from glamor_lightning.data.contract import DataContract
from glamor_lightning.export import check_onnx, export_onnx, onnx_session
from glamor_lightning.models.encoders import ENCODERS
from glamor_lightning.models.glamor import GlamorNet


def randomise_batchnorm(net: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that the exported BatchNorm folding is really exercised."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("backbone", ENCODERS.names())
def test_onnx_matches_pytorch_for_every_backbone(backbone, tmp_path):
    torch.manual_seed(0)
    net = GlamorNet(backbone=backbone).eval()
    randomise_batchnorm(net)
    path = export_onnx(net, tmp_path / f"{backbone}.onnx", DataContract())
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["face", "context"]
    assert [o.name for o in session.get_outputs()] == ["logits", "attention"]
    diff = check_onnx(net, path, DataContract(), batch=3)  # batch 3 ≠ the export's batch 2: the batch axis is dynamic
    assert diff["logits"] <= 1e-4 and diff["attention"] <= 1e-4, diff


@pytest.mark.parametrize(
    "setting",
    [dict(inputs="face", attention="none", fusion="none"), dict(inputs="context", attention="standard", fusion="none")],
)
def test_single_input_settings_keep_both_inputs(setting, tmp_path):
    net = GlamorNet(**setting).eval()
    path = export_onnx(net, tmp_path / "m.onnx", DataContract())
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["face", "context"]
    assert check_onnx(net, path, DataContract(), batch=1)["logits"] <= 1e-4


def test_export_command_on_a_checkpoint(synth_root, tmp_path, capsys):
    ckpt = fit_checkpoint(synth_root, tmp_path / "m.ckpt")
    out = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert "ONNX Runtime vs PyTorch, max |difference|: logits" in capsys.readouterr().out
    module = load_module(ckpt)
    face = torch.rand(4, 3, 96, 96)
    context = torch.rand(4, 3, 112, 112)
    logits, attention = onnx_session(out).run(None, {"face": face.numpy(), "context": context.numpy()})
    with torch.no_grad():
        ref = module.net(face, context)
    assert np.abs(logits - ref.logits.numpy()).max() <= 1e-4
    assert attention.shape == tuple(ref.attention.shape) == (4, 7, 7)
