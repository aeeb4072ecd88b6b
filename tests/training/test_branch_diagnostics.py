"""The collapse diagnostics (`callbacks.branch_diagnostics`) on real validation runs: a model whose context
vector is always zero has no context in its decision; one whose face vector is zero decides by the context."""

from __future__ import annotations

import pytest
import torch

from conftest import cpu_trainer, make_datamodule
from glamor_lightning.callbacks.branch_diagnostics import BranchDiagnostics, branch_effects, grad_norms
from glamor_lightning.module import EmotionModule


def silence(encoder: torch.nn.Module) -> None:
    """Make an encoder output zeros: its last BatchNorm's scale and shift set to 0 (then ReLU, pool: 0)."""
    last_bn = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.zero_()


def validate(module: EmotionModule, synth_root) -> dict[str, float]:
    dm = make_datamodule(synth_root)
    module.bind_data(dm)
    trainer = cpu_trainer(
        callbacks=[BranchDiagnostics()],
    )
    return {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}


@pytest.fixture
def module():
    torch.manual_seed(0)
    return EmotionModule(fusion="add", channels_last=False)


def test_a_model_whose_context_is_zeroed_has_no_context_share(module, synth_root):
    silence(module.net.context_encoder)
    m = validate(module, synth_root)
    assert m["val/context_flip"] == 0.0
    assert m["val/acc_without_context"] == pytest.approx(m["val/acc"])


def test_a_model_whose_face_is_zeroed_loses_nothing_without_it(module, synth_root):
    silence(module.net.face_encoder)
    m = validate(module, synth_root)
    assert m["val/acc_without_face"] == pytest.approx(m["val/acc"])


def test_a_context_that_moves_the_decision_has_a_share():
    """Without the face, the fused head's answer follows v_c; with v_c zeroed too, it is one constant class."""
    torch.manual_seed(3)
    net = EmotionModule(fusion="concat", channels_last=False).net.eval()
    v_f, v_c = torch.zeros(256, 256), torch.randn(256, 256) * 10
    target = torch.randint(0, 7, (256,))
    effects = branch_effects(net, v_f, v_c, target)
    intact = net.decide(v_f, v_c)[0].argmax(dim=1)
    constant = net.decide(v_f, torch.zeros_like(v_c))[0].argmax(dim=1)
    assert len(intact.unique()) > 1 and len(constant.unique()) == 1
    assert float(effects["val/context_flip"]) == pytest.approx(float((intact != constant[0]).float().mean()))
    assert float(effects["val/context_flip"]) > 0.3


def test_a_single_branch_model_logs_no_branch_diagnostics(synth_root):
    m = validate(EmotionModule(inputs="face", attention="none", fusion="none", channels_last=False), synth_root)
    assert not [k for k in m if "without" in k or "flip" in k]


def test_gradient_norms_per_branch_and_zero_for_a_frozen_part():
    module = EmotionModule(channels_last=False)
    optimizer = torch.optim.SGD(module.param_groups(), lr=0.1)
    out = module(
        torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8),
        torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8),
    )
    out.logits.sum().backward()
    for p in module.net.attention.parameters():
        p.grad = None  # as StageScheduler leaves a frozen part
    norms = grad_norms(optimizer)
    expected = torch.stack([p.grad.norm() for p in module.net.face_encoder.parameters()]).norm()
    assert norms["face_encoder"] == pytest.approx(float(expected), rel=1e-5)
    assert norms["context_encoder"] > 0 and norms["attention"] == 0.0
