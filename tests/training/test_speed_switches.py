"""Precision (bf16-mixed on CPU, 16-mixed on GPU), channels-last and torch.compile switches, end to end."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from conftest import compose_config
from glamor_lightning.checkpoints import load_module
from glamor_lightning.module import EmotionModule
from training_helpers import FAST, fit

SHORT = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "callbacks.stages=null",
]


class Inspect(Callback):
    """Records the classifier's output dtype in training forwards (validation also runs the fp32 collapse
    diagnostics) and whether the first face conv sees channels-last input."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()
        self.channels_last: set[bool] = set()
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        net = pl_module.net
        net.classifier.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype) if m.training else None)
        conv = next(m for m in net.face_encoder.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_pre_hook(
            lambda m, i: self.channels_last.add(i[0].is_contiguous(memory_format=torch.channels_last))
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _run(synth_root, out, overrides):
    probe = Inspect()
    cfg = compose_config("train", out, [f"data.root={synth_root}", *FAST, *SHORT, *overrides])
    trainer = fit(cfg, [probe])
    assert probe.losses and all(torch.isfinite(torch.tensor(probe.losses)))
    return trainer, probe


def test_bf16_mixed_on_cpu(synth_root, tmp_path):
    _, probe = _run(synth_root, tmp_path, ["trainer.precision=bf16-mixed"])
    assert probe.dtypes == {torch.bfloat16}


def test_channels_last_end_to_end(synth_root, tmp_path):
    trainer, probe = _run(synth_root, tmp_path, ["model.channels_last=true", "trainer.precision=bf16-mixed"])
    assert probe.channels_last == {True}
    conv = next(m for m in trainer.lightning_module.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the checkpoint loads into a model of either layout
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert load_module(ckpt).hparams.channels_last


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = EmotionModule(channels_last=False).eval()
    cl = EmotionModule(channels_last=True).eval()
    cl.load_state_dict(plain.state_dict())
    face = torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8)
    ctx = torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = plain(face, ctx), cl(face, ctx)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.allclose(a.attention, b.attention, atol=1e-6)


def test_compile_switch_aot_eager(synth_root, tmp_path):
    _, probe = _run(synth_root, tmp_path, ["model.compile=aot_eager"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])  # compiled in place: the keys do not move
    assert ckpt["hyper_parameters"]["compile"] == "aot_eager"


def test_compiled_net_matches_eager():
    torch.manual_seed(0)
    module = EmotionModule(compile="aot_eager").eval()
    face = torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8)
    ctx = torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        eager = module(face, ctx).logits
        module.configure_model()
        module.configure_model()  # once only
        assert module.net._compiled_call_impl is not None
        compiled = module(face, ctx).logits
    assert torch.allclose(eager, compiled, atol=1e-5)


@pytest.mark.slow
def test_compile_switch_inductor(synth_root, tmp_path):
    """Inductor generates and compiles C++ on CPU (gcc): minutes on 2 cores."""
    _run(synth_root, tmp_path, ["model.compile=true"])


@pytest.mark.gpu
def test_16_mixed_and_channels_last_on_gpu(synth_root, tmp_path):
    _, probe = _run(
        synth_root, tmp_path, ["trainer.accelerator=gpu", "trainer.precision=16-mixed", "model.channels_last=true"]
    )
    assert probe.dtypes == {torch.float16} and probe.channels_last == {True}


def _sgd_steps(module: EmotionModule, steps: int = 4) -> list[torch.Tensor]:
    """`steps` SGD steps of the module's own optimiser on fixed random batches; its parameters after them."""
    optimizer = module.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        face = torch.randint(0, 255, (4, 96, 96, 3), dtype=torch.uint8, generator=g)
        ctx = torch.randint(0, 255, (4, 112, 112, 3), dtype=torch.uint8, generator=g)
        target = torch.randint(0, 7, (4,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(face, ctx).logits, target).backward()
        optimizer.step()
    return [p.detach().clone() for p in module.parameters()]


def test_fused_sgd_is_the_default_and_makes_the_per_tensor_loops_update():
    """`model.fused_sgd` (default true) runs torch's fused SGD kernel; false, the per-tensor loop. Same maths:
    after four steps with momentum, weight decay and nesterov every weight agrees to float rounding."""
    settings = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True, dropout=0.0)
    torch.manual_seed(0)
    fused = EmotionModule(**settings)
    loop = EmotionModule(fused_sgd=False, **settings)
    loop.load_state_dict(fused.state_dict())
    assert fused.configure_optimizers()["optimizer"].defaults["fused"] is True
    assert not loop.configure_optimizers()["optimizer"].defaults["fused"]
    before = [p.detach().clone() for p in fused.parameters()]
    after_fused, after_loop = _sgd_steps(fused), _sgd_steps(loop)
    assert max((a - b).abs().max().item() for a, b in zip(after_fused, before)) > 1e-3  # the steps did move it
    assert max((a - b).abs().max().item() for a, b in zip(after_fused, after_loop)) < 1e-5
