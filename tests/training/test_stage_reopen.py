"""A stage that re-opens parts (the joint stage re-opens the encoders and the attention, frozen in the
fusion stage) starts their SGD momentum afresh: the first step of the new stage follows the new loss only,
in a run that goes through the switch and in runs resumed before it; a run resumed after it does not
clear the momentum a second time."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from training_helpers import FAST, ONE_EPOCH_STAGES, THREE_SHORT_EPOCHS, resumed_before_and_after

REOPENED = ("face_encoder", "context_encoder", "attention")  # by the joint stage (epoch 2)
KEPT = ("fusion", "classifier")  # trained in the fusion stage (epoch 1) and in the joint one


class FirstStep(Callback):
    """Per epoch, at its first optimiser step: each part's gradients and its momentum buffers after the
    step; and the momentum buffers a run starts with (after a checkpoint is restored)."""

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, list[torch.Tensor]]] = {}
        self.buffers: dict[int, dict[str, list[torch.Tensor]]] = {}
        self.at_start: dict[str, list[torch.Tensor | None]] = {}

    @staticmethod
    def _groups(trainer):
        return {g["name"]: g["params"] for g in trainer.optimizers[0].param_groups}

    def on_train_start(self, trainer, pl_module) -> None:  # after the checkpoint is restored
        state = trainer.optimizers[0].state
        self.at_start = {
            name: [_clone(state[p].get("momentum_buffer")) for p in params]
            for name, params in self._groups(trainer).items()
        }

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.current_epoch not in self.grads:  # the stage scheduler has already dropped frozen grads
            self.grads[trainer.current_epoch] = {
                name: [_clone(p.grad) for p in params] for name, params in self._groups(trainer).items()
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch, state = trainer.current_epoch, trainer.optimizers[0].state
        if epoch not in self.buffers:
            self.buffers[epoch] = {
                name: [_clone(state[p].get("momentum_buffer")) for p in params]
                for name, params in self._groups(trainer).items()
            }


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """A: epochs 0 (branches), 1 (fusion), 2 (joint) of 2 steps each, saving checkpoints at the end of
    epoch 1 (before the re-open) and after the first step of epoch 2 (after it). B resumes the first,
    C the second."""
    common = [
        f"data.root={synth_root}",
        *FAST,
        *ONE_EPOCH_STAGES,
        *THREE_SHORT_EPOCHS,
    ]
    return resumed_before_and_after(tmp_path_factory, common, FirstStep, before=(1, "end"), after=(2, 0))


@pytest.mark.parametrize("run", ["a", "b"])
def test_reopened_parts_start_the_stage_with_fresh_momentum(runs, run):
    probe = getattr(runs, run)
    for name in REOPENED:  # the first step's momentum buffer is that step's gradient: nothing older
        assert _equal(probe.buffers[2][name], probe.grads[2][name]), name
    for name in KEPT:  # parts that kept training keep their momentum
        assert not _equal(probe.buffers[2][name], probe.grads[2][name]), name


def test_resume_after_the_reopen_keeps_the_momentum(runs):
    saved = torch.load(runs.after, map_location="cpu", weights_only=True)["optimizer_states"][0]
    groups = {g["name"]: g["params"] for g in saved["param_groups"]}
    for name in REOPENED:
        restored = runs.c.at_start[name]
        assert all(t is not None for t in restored), name
        assert _equal(restored, [saved["state"][i]["momentum_buffer"] for i in groups[name]]), name
    # and the resumed run ends where the uninterrupted one ends
    final = {
        name: torch.load(runs.dirs[k] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        for name, k in (("a", "A"), ("c", "C"))
    }
    assert all(torch.equal(v, final["c"][k]) for k, v in final["a"].items())
