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


def _sgd_steps(
    module: EmotionModule, steps: int = 4, optimizer: torch.optim.Optimizer | None = None, seed: int = 1
) -> list[torch.Tensor]:
    """`steps` SGD steps of `optimizer` (default: the module's own) on fixed random batches; the parameters after."""
    optimizer = optimizer or module.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(seed)
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


def _resumed_steps(before: dict, after: dict, settings: dict) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Two SGD steps of a module built with `before`, its weights and optimiser state loaded into one built with
    `after` (as resuming a run does), and two more steps there: its parameters after them, and its optimiser."""
    torch.manual_seed(0)
    first = EmotionModule(**before, **settings)
    optimizer = first.configure_optimizers()["optimizer"]
    _sgd_steps(first, 2, optimizer)
    resumed = EmotionModule(**after, **settings)
    resumed.load_state_dict(first.state_dict())
    optimizer_after = resumed.configure_optimizers()["optimizer"]
    optimizer_after.load_state_dict(optimizer.state_dict())
    return _sgd_steps(resumed, 2, optimizer_after, seed=2), optimizer_after


@pytest.mark.parametrize("channels_last_before", [False, True])
def test_sgd_resumed_in_another_memory_layout_updates_as_the_per_tensor_loop(channels_last_before):
    """Resuming may change `model.channels_last` (`train.RESUME_FREE`): the parameters are built in the new layout,
    the momentum buffers come back in the old one. torch's fused kernel reads parameter, gradient and buffer as flat
    arrays, so a buffer in the other layout gave a silently wrong update (`optimizers.SGD`). After such a resume the
    fused optimiser's steps agree with the per-tensor loop's, and its buffers are in their parameters' layout."""
    settings = dict(lr=0.05, momentum=0.9, dropout=0.0)
    before, after = dict(channels_last=channels_last_before), dict(channels_last=not channels_last_before)
    fused, optimizer = _resumed_steps({**before, "fused_sgd": True}, {**after, "fused_sgd": True}, settings)
    loop, _ = _resumed_steps({**before, "fused_sgd": False}, {**after, "fused_sgd": False}, settings)
    conv = next(p for p in optimizer.param_groups[1]["params"] if p.dim() == 4 and p.shape[1] == 256)  # 256x256x3x3
    assert optimizer.state[conv]["momentum_buffer"].stride() == conv.stride()
    assert max((a - b).abs().max().item() for a, b in zip(fused, loop)) < 1e-5


@pytest.mark.parametrize("fused_before", [False, True])
def test_sgd_resumed_with_fused_sgd_changed_runs_the_implementation_asked_for(fused_before):
    """Resuming may change `model.fused_sgd`; torch's `load_state_dict` took the implementation from the checkpoint
    (the saved groups' `fused` and `foreach`), so the new setting was silently ignored. It is the one asked for now;
    and a fused run resumed as the loop in another memory layout updates as the loop does throughout."""
    settings = dict(lr=0.05, momentum=0.9, dropout=0.0)
    changed, optimizer = _resumed_steps(
        dict(fused_sgd=fused_before, channels_last=False),
        dict(fused_sgd=not fused_before, channels_last=True),
        settings,
    )
    assert {bool(g["fused"]) for g in optimizer.param_groups} == {not fused_before}
    loop, _ = _resumed_steps(
        dict(fused_sgd=False, channels_last=False), dict(fused_sgd=False, channels_last=True), settings
    )
    assert max((a - b).abs().max().item() for a, b in zip(changed, loop)) < 1e-5


class OptimizerAtTrainStart(Callback):
    """The optimiser as the run starts training (after a resumed run has loaded its state)."""

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        self.fused = {bool(g["fused"]) for g in optimizer.param_groups}
        held = [(p, optimizer.state[p]["momentum_buffer"]) for g in optimizer.param_groups for p in g["params"]]
        self.buffers = len(held)
        self.in_layout = all(b.stride() == p.stride() for p, b in held)


def test_a_resumed_run_keeps_its_new_layout_and_sgd_implementation(synth_root, tmp_path):
    """The same through Lightning's checkpoint loading: a channels-last run with the fused kernel, resumed with
    `model.channels_last=false model.fused_sgd=false`, trains with the per-tensor loop, every momentum buffer in its
    parameter's layout."""
    _run(synth_root, tmp_path / "first", ["model.channels_last=true", "model.fused_sgd=true"])
    probe = OptimizerAtTrainStart()
    overrides = [f"data.root={synth_root}", *FAST, *SHORT[1:], "trainer.max_epochs=2"]
    cfg = compose_config(
        "train", tmp_path / "resumed", [*overrides, "model.channels_last=false", "model.fused_sgd=false"]
    )
    fit(cfg, [probe], ckpt_path=tmp_path / "first" / "checkpoints" / "last.ckpt")
    assert probe.fused == {False} and probe.buffers > 50 and probe.in_layout
