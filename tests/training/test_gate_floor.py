"""`callbacks.gate_floor`: the fusion net's floor holds for the first epochs, then only while the auxiliary context
head reads better than chance (an exact one-sided binomial test); the floor an epoch trained under is the one its
checkpoints carry and every loading path restores; a resumed run decides as the uninterrupted one; wrong settings
are refused, saying what to set."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import compose_config
from glamor_lightning.callbacks.gate_floor import GateFloorFollowsContext, above_chance
from glamor_lightning.checkpoints import load_module
from glamor_lightning.models.fusion import FLOOR_KEY
from training_helpers import FAST, THREE_SHORT_EPOCHS, epoch_rows, fit, read_metrics, resumed_before_and_after

#: on: the floor holds in epoch 0 (a third of 3 epochs), then needs the head above chance; alpha so small that
#: 16 samples an epoch (2 steps of 8) can never pass it, so the floor is released from epoch 1 on
RELEASES = [
    "callbacks.gate_floor.enabled=true",
    "callbacks.gate_floor.hold_fraction=0.33",
    "callbacks.gate_floor.alpha=1e-30",
]


class FloorAtEpochStart(Callback):
    """The fusion net's floor at each epoch's first training batch (after the callback's epoch-start hook)."""

    def __init__(self) -> None:
        self.floors: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.floors.setdefault(trainer.current_epoch, pl_module.net.fusion.floor)


def test_above_chance_is_the_exact_binomial_tail():
    # P(X >= 15) for X ~ Binomial(20, 1/2), by exact fractions: 21700 / 2**20 = 0.020695...
    tail = float(sum(Fraction(comb(20, k), 2**20) for k in range(15, 21)))
    assert above_chance(15, 20, classes=2, alpha=tail * 1.001)
    assert not above_chance(15, 20, classes=2, alpha=tail * 0.999)
    # 7 classes, 2,800 samples (a SynthCAER training epoch): chance is 400 right; 3.2 sd above passes at 0.001
    assert not above_chance(400, 2800, classes=7, alpha=0.001)
    assert not above_chance(455, 2800, classes=7, alpha=0.001)  # p = 0.0019
    assert above_chance(460, 2800, classes=7, alpha=0.001)  # p = 0.0008
    assert above_chance(2800, 2800, classes=7, alpha=1e-30)
    assert not above_chance(0, 0, classes=7, alpha=1.0)  # no samples, no evidence


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """A: 3 epochs of 2 steps with the floor released after epoch 0; checkpoints at the end of epoch 0 (before the
    first decision takes effect) and after the first step of epoch 1. B resumes the first, C the second."""
    common = [f"data.root={synth_root}", *FAST, *THREE_SHORT_EPOCHS, *RELEASES]
    return resumed_before_and_after(tmp_path_factory, common, FloorAtEpochStart, before=(0, "end"), after=(1, 0))


def test_the_floor_holds_then_is_released_when_the_context_head_is_not_above_chance(runs):
    assert runs.a.floors == {0: 0.4, 1: 0.0, 2: 0.0}
    epochs = epoch_rows(read_metrics(runs.dirs["A"]))
    assert [epochs[e]["train/gate_floor"] for e in range(3)] == pytest.approx([0.4, 0.0, 0.0])  # logged as float32
    assert all(0.0 <= epochs[e]["train/acc_context_head"] <= 1.0 for e in range(3))
    # the fusion weights in epoch 0 are bounded by the floor
    assert 0.4 <= epochs[0]["train/w_context"] <= 0.6


def test_a_resumed_run_decides_as_the_uninterrupted_one_and_ends_with_the_same_weights(runs):
    assert runs.b.floors == {1: 0.0, 2: 0.0}  # resumed from the end of epoch 0: the pending decision came along
    assert runs.c.floors == {1: 0.0, 2: 0.0}  # resumed mid-epoch 1: the floor in force came along
    final = {
        k: torch.load(runs.dirs[k] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for k in "ABC"
    }
    assert all(torch.equal(v, final["C"]["state_dict"][k]) for k, v in final["A"]["state_dict"].items())
    assert all(torch.equal(v, final["B"]["state_dict"][k]) for k, v in final["A"]["state_dict"].items())


def test_a_checkpoint_is_evaluated_with_the_floor_it_trained_under(runs):
    before = runs.dirs["A"] / "before.ckpt"  # end of epoch 0: trained under 0.4
    assert torch.load(before, map_location="cpu", weights_only=True)[FLOOR_KEY] == 0.4
    assert load_module(before).net.fusion.floor == 0.4
    last = runs.dirs["A"] / "checkpoints" / "last.ckpt"  # epoch 2: trained under no floor
    assert load_module(last).net.fusion.floor == 0.0
    # a checkpoint from before the floor was saved trained under the configured floor: that is what it gets
    old = torch.load(last, map_location="cpu", weights_only=True)
    del old[FLOOR_KEY]
    torch.save(old, runs.dirs["A"] / "old.ckpt")
    assert load_module(runs.dirs["A"] / "old.ckpt").net.fusion.floor == 0.4


def test_on_in_the_default_recipe_off_in_the_plain_one_and_when_off_the_floor_never_moves(synth_root, tmp_path):
    assert compose_config("train", tmp_path, [f"data.root={synth_root}"]).callbacks.gate_floor.enabled is True
    assert compose_config("train", tmp_path, ["recipe=plain"]).callbacks.gate_floor.enabled is False
    probe = FloorAtEpochStart()
    overrides = [f"data.root={synth_root}", *FAST, *THREE_SHORT_EPOCHS, "callbacks.gate_floor.enabled=false"]
    fit(compose_config("train", tmp_path, overrides), [probe])
    assert probe.floors == {0: 0.4, 1: 0.4, 2: 0.4}


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["recipe=plain"], "model.aux_heads=true"),
        (["recipe=plain", "model.aux_heads=true"], "set model.fusion_floor"),
    ],
)
def test_a_model_it_cannot_serve_is_refused_saying_what_to_set(synth_root, tmp_path, overrides, says):
    cfg = compose_config("train", tmp_path, [f"data.root={synth_root}", *FAST, *overrides, *RELEASES])
    with pytest.raises(ValueError, match=says) as err:
        fit(cfg)
    assert "callbacks.gate_floor.enabled=false" in str(err.value)


@pytest.mark.parametrize(("setting", "value"), [("hold_fraction", 1.5), ("alpha", 0.0)])
def test_settings_out_of_range_are_refused(setting, value):
    with pytest.raises(ValueError, match=f"callbacks.gate_floor.{setting}"):
        GateFloorFollowsContext(enabled=True, **{setting: value})
