"""`callbacks.context_warm_start`: at the start of the chosen epoch the context encoder becomes a copy of the
face encoder (weights and BatchNorm statistics) with fresh momentum, once; runs resumed before the copy make
it, runs resumed after it do not make it again; wrong settings are refused, saying what to set."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import compose_config
from glamor_lightning.callbacks.warm_start import ContextWarmStart, copy_encoder
from glamor_lightning.models.glamor import GlamorNet
from training_helpers import FAST, THREE_SHORT_EPOCHS, fit, resumed_before_and_after

COPY_EPOCH = 1


class EpochStarts(Callback):
    """Per epoch, at its first training batch (after the warm start's epoch-start hook): both encoders'
    tensors and the context encoder's momentum buffers."""

    def __init__(self) -> None:
        self.face, self.context, self.momentum = {}, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.face:
            net = pl_module.net
            self.face[epoch] = {k: v.clone() for k, v in net.face_encoder.state_dict().items()}
            self.context[epoch] = {k: v.clone() for k, v in net.context_encoder.state_dict().items()}
            state = trainer.optimizers[0].state
            group = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "context_encoder")
            self.momentum[epoch] = [state.get(p, {}).get("momentum_buffer") for p in group["params"]]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """A: 3 epochs of 2 steps, the copy at the start of epoch 1; checkpoints at the end of epoch 0 (before the
    copy) and after the first step of epoch 1 (after it). B resumes the first, C the second."""
    common = [
        f"data.root={synth_root}",
        *FAST,
        *THREE_SHORT_EPOCHS,
        f"callbacks.context_warm_start.epoch={COPY_EPOCH}",
    ]
    return resumed_before_and_after(tmp_path_factory, common, EpochStarts, before=(0, "end"), after=(1, 0))


@pytest.mark.parametrize("run", ["a", "b"])
def test_the_context_encoder_starts_the_epoch_as_a_copy_of_the_face_encoder(runs, run):
    probe = getattr(runs, run)
    assert _same(probe.face[COPY_EPOCH], probe.context[COPY_EPOCH])  # weights and BatchNorm statistics
    assert all(m is None for m in probe.momentum[COPY_EPOCH])  # momentum of the replaced weights is gone
    # before the copy the two encoders were different (and the context encoder had momentum)
    if run == "a":
        assert not _same(probe.face[0], probe.context[0])
    assert not _same(probe.face[COPY_EPOCH + 1], probe.context[COPY_EPOCH + 1])  # and they train apart after it
    assert all(m is not None for m in probe.momentum[COPY_EPOCH + 1])


def test_a_run_resumed_after_the_copy_does_not_copy_again_and_ends_as_the_uninterrupted_one(runs):
    assert not _same(runs.c.face[COPY_EPOCH + 1], runs.c.context[COPY_EPOCH + 1])
    assert all(m is not None for m in runs.c.momentum[COPY_EPOCH + 1])
    final = {
        k: torch.load(runs.dirs[k] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for k in "AC"
    }
    assert all(torch.equal(v, final["C"][k]) for k, v in final["A"].items())


def test_off_by_default_and_the_encoders_never_copied(synth_root, tmp_path):
    cfg = compose_config("train", tmp_path, [f"data.root={synth_root}", *FAST])
    assert cfg.callbacks.context_warm_start.epoch is None
    probe = EpochStarts()
    fit(
        compose_config(
            "train",
            tmp_path,
            [
                f"data.root={synth_root}",
                *FAST,
                "trainer.max_epochs=2",
                "+trainer.limit_train_batches=2",
                "+trainer.limit_val_batches=1",
            ],
        ),
        [probe],
    )
    assert not any(_same(probe.face[e], probe.context[e]) for e in probe.face)


def test_copy_keeps_the_targets_tensors_and_memory_format():
    net = GlamorNet(backbone="original").to(memory_format=torch.channels_last)
    before = {k: v.data_ptr() for k, v in net.context_encoder.state_dict().items()}
    n = copy_encoder(net)
    after = net.context_encoder.state_dict()
    assert n == len(after) and {k: v.data_ptr() for k, v in after.items()} == before  # in place
    assert _same(net.face_encoder.state_dict(), after)
    conv = next(v for v in after.values() if v.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_encoders_of_different_shapes_are_refused_naming_the_tensor():
    net = GlamorNet(backbone="original")
    net.context_encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3))
    with pytest.raises(ValueError, match=r"cannot copy face_encoder into context_encoder: .*only one"):
        copy_encoder(net)


def test_a_model_with_one_branch_is_refused_saying_what_to_set(synth_root, tmp_path):
    overrides = ["model.inputs=face", "model.attention=none", "model.fusion=none", "recipe=plain"]
    cfg = compose_config(
        "train", tmp_path, [f"data.root={synth_root}", *FAST, "callbacks.context_warm_start.epoch=0", *overrides]
    )
    with pytest.raises(
        ValueError, match=r"has one branch \(model.inputs='face'\): set callbacks.context_warm_start.epoch=null"
    ):
        fit(cfg)


def test_an_epoch_the_run_never_reaches_is_a_warning_and_no_copy(synth_root, tmp_path):
    cfg = compose_config(
        "train",
        tmp_path,
        [
            f"data.root={synth_root}",
            *FAST,
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "callbacks.context_warm_start.epoch=1",
        ],
    )
    with pytest.warns(UserWarning, match=r"epoch=1 is never reached in trainer.max_epochs=1"):
        trainer = fit(cfg)
    (warm_start,) = [c for c in trainer.callbacks if isinstance(c, ContextWarmStart)]
    assert not warm_start.done


@pytest.mark.parametrize("epoch", [-1, 1.5, True, "3"])
def test_the_epoch_must_be_a_whole_epoch_or_null(epoch):
    with pytest.raises(ValueError, match="must be an epoch >= 0 or null"):
        ContextWarmStart(epoch=epoch)
