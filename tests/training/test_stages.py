"""StageScheduler: which parts learn in each stage (weights, momentum and BatchNorm statistics of the
frozen ones do not move), BatchNorm eval mode, which losses count, learning rates, logging, and a
resume past a milestone."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch import nn

from conftest import compose_config
from glamor_lightning.callbacks.stages import Stage, StageScheduler
from glamor_lightning.models import GlamorNet
from glamor_lightning.module import EmotionModule
from training_helpers import FAST, ONE_EPOCH_STAGES, epoch_rows, fit, read_metrics

ALL = {"face_encoder", "context_encoder", "attention", "fusion", "classifier", "face_head", "context_head"}
#: parts that learn in epochs 0 (branches), 1 (fusion), 2 (joint) of ONE_EPOCH_STAGES
LEARNS = {
    0: {"face_encoder", "context_encoder", "attention", "face_head", "context_head"},
    1: {"fusion", "classifier"},
    2: {"face_encoder", "context_encoder", "attention", "fusion", "classifier"},
}
LOSS_WEIGHTS = {
    0: {"fused": 0.0, "face": 1.0, "context": 1.0},
    1: {"fused": 1.0, "face": 0.0, "context": 0.0},
    2: {"fused": 1.0, "face": 0.0, "context": 0.0},
}


class Probe(Callback):
    """Per epoch: parts whose tensors (parameters and BatchNorm buffers) changed; BatchNorm modes, loss
    weights and group learning rates seen at every training batch."""

    def __init__(self) -> None:
        self.changed: dict[int, set[str]] = {}
        self.bn_training: dict[int, dict[str, set[bool]]] = {}
        self.loss_weights: dict[int, dict[str, float]] = {}
        self.lrs: dict[int, dict[str, float]] = {}
        self._start: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.bn_training:  # first batch of the epoch (also after a resume)
            self._start = {
                n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in pl_module.net.named_children()
            }
        modes = self.bn_training.setdefault(epoch, {})
        for name, part in pl_module.net.named_children():
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    modes.setdefault(name, set()).add(m.training)
        self.loss_weights[epoch] = dict(pl_module.loss_weights)
        self.lrs[epoch] = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.changed[trainer.current_epoch] = {
            n
            for n, m in pl_module.net.named_children()
            if any(not torch.equal(v, self._start[n][k]) for k, v in m.state_dict().items())
        }


def _fit(cfg, ckpt_path=None) -> tuple[L.Trainer, Probe]:
    probe = Probe()
    return fit(cfg, [probe], ckpt_path), probe


@pytest.fixture(scope="module")
def staged(synth_root, tmp_path_factory):
    """Epoch 0 (branches) in a first run; epochs 1 (fusion) and 2 (joint) in a run resumed from its
    epoch-end checkpoint, i.e. past the branches → fusion milestone."""
    first, second = tmp_path_factory.mktemp("stage0"), tmp_path_factory.mktemp("stage12")
    common = [
        f"data.root={synth_root}",
        *FAST,
        *ONE_EPOCH_STAGES,
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
    ]
    _, probe0 = _fit(compose_config("train", first, [*common, "trainer.max_epochs=1"]))
    ckpt = first / "checkpoints" / "last.ckpt"
    trainer, probe12 = _fit(compose_config("train", second, [*common, "trainer.max_epochs=3"]), ckpt_path=ckpt)
    probe = probe12
    for field in ("changed", "bn_training", "loss_weights", "lrs"):
        getattr(probe, field).update(getattr(probe0, field))
    return SimpleNamespace(probe=probe, trainer=trainer, first=first, second=second, ckpt=ckpt)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_only_the_stages_parts_learn(staged, epoch):
    learns = staged.probe.changed[epoch]
    # parameters, momentum-driven updates and BatchNorm running statistics of frozen parts do not move
    assert learns == LEARNS[epoch], f"epoch {epoch}: changed {sorted(learns)}, expected {sorted(LEARNS[epoch])}"


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_frozen_batchnorm_is_in_eval_mode(staged, epoch):
    for part, modes in staged.probe.bn_training[epoch].items():
        assert modes == {part in LEARNS[epoch]}, (epoch, part, modes)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_the_stages_losses_count(staged, epoch):
    assert staged.probe.loss_weights[epoch] == LOSS_WEIGHTS[epoch]


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_frozen_groups_show_zero_lr(staged, epoch):
    lrs = staged.probe.lrs[epoch]
    assert {n for n, lr in lrs.items() if lr == 0} == ALL - LEARNS[epoch]
    assert all(lr > 0 for n, lr in lrs.items() if n in LEARNS[epoch])


def test_resume_past_a_milestone_is_in_the_right_stage(staged):
    state = torch.load(staged.ckpt, map_location="cpu", weights_only=True)["callbacks"]["StageScheduler"]
    assert state["stage_name"] == "branches" and state["starts"] == [0, 1, 2]
    final = torch.load(staged.second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["callbacks"]["StageScheduler"]["stage_name"] == "joint"
    # the auxiliary heads last learned in the first run: the resumed run left them as they were saved
    start = torch.load(staged.ckpt, map_location="cpu", weights_only=True)["state_dict"]
    heads = [k for k in start if k.startswith(("net.face_head.", "net.context_head."))]
    assert heads and all(torch.equal(start[k], final["state_dict"][k]) for k in heads)


def test_stage_and_fusion_weights_are_logged_per_epoch(staged):
    rows = epoch_rows(read_metrics(staged.second))
    assert [rows[e]["stage"] for e in (1, 2)] == [1.0, 2.0]
    for e in (1, 2):
        assert rows[e]["train/w_face"] + rows[e]["train/w_context"] == pytest.approx(1.0, abs=1e-5)
        assert {"val/w_face", "val/acc_face", "val/acc_context"} <= rows[e].keys()
    assert staged.trainer.lightning_module.net.face_encoder.training  # no BatchNorm left in eval mode


def _paper_schedule(out) -> StageScheduler:
    """The schedule of `callbacks=staged`, from the config (its one source)."""
    return instantiate(compose_config("train", out, ["callbacks=staged"]).callbacks.stages)


def test_staged_config_is_the_documented_schedule(tmp_path):
    """docs/training.md's table: branches (epoch 0) → fusion (40 %) → joint (60 %)."""
    encoders = ("face_encoder", "context_encoder", "attention")
    assert [(s.name, s.start, s.train, s.losses, s.lr_factor) for s in _paper_schedule(tmp_path).stages] == [
        ("branches", 0, (*encoders, "face_head", "context_head"), {"face": 1.0, "context": 1.0}, 1.0),
        ("fusion", 0.4, ("fusion", "classifier"), {"fused": 1.0}, 1.0),
        ("joint", 0.6, (*encoders, "fusion", "classifier"), {"fused": 1.0}, 1.0),
    ]


def test_the_schedule_is_written_once():
    with pytest.raises(TypeError):
        StageScheduler()  # no second copy of the schedule in the code
    with pytest.raises(ValueError, match="at least one stage.*conf/callbacks/default.yaml"):
        StageScheduler(None)


def test_default_schedule_scales_with_max_epochs(tmp_path):
    sched = _paper_schedule(tmp_path)
    assert [s.name for s in sched.stages] == ["branches", "fusion", "joint"]
    assert sched._resolve_starts(SimpleNamespace(max_epochs=15)) == [0, 6, 9]
    assert sched._resolve_starts(SimpleNamespace(max_epochs=60)) == [0, 24, 36]
    sched.starts = [0, 6, 9]
    assert [sched.stage_at(e) for e in (0, 5, 6, 8, 9, 14)] == [0, 0, 1, 1, 2, 2]
    # joint re-opens what branches trained and fusion froze
    assert sched.reopened(2) == {"face_encoder", "context_encoder", "attention"}
    assert sched.reopened(1) == frozenset()


def test_staged_config_turns_the_schedule_on(tmp_path):
    staged = _paper_schedule(tmp_path)
    assert staged.enabled
    default = instantiate(compose_config("train", tmp_path).callbacks.stages)
    assert not default.enabled  # off by default: end to end, as the authors' code


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "x"}, "give its `start`"),
        ({"name": "x", "start": 1.5}, r"fraction of max_epochs in \[0, 1\]"),
        ({"name": "x", "start": 0, "train": ["face_encoderr"]}, "unknown part.*face_encoderr"),
        ({"name": "x", "start": 0, "losses": {"fusion": 1}}, "unknown loss.*fusion"),
        ({"name": "x", "start": 0, "losses": {"fused": 0}}, "no loss counts"),
        ({"name": "x", "start": 0, "lr_factor": 0}, "lr_factor must be > 0"),
        ({"name": "x", "start": 0, "freeze": []}, "unknown key.*freeze"),
    ],
)
def test_bad_stage_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        Stage.parse(spec, 0)


def test_first_stage_must_start_at_zero_and_stages_in_order():
    with pytest.raises(ValueError, match="must start at epoch 0"):
        StageScheduler([{"name": "a", "start": 1}])._resolve_starts(SimpleNamespace(max_epochs=3))
    with pytest.raises(ValueError, match="in order"):
        StageScheduler(
            [{"name": "a", "start": 0}, {"name": "b", "start": 3}, {"name": "c", "start": 2}]
        )._resolve_starts(SimpleNamespace(max_epochs=5))


def test_model_without_auxiliary_heads_is_a_clear_error(tmp_path):
    trainer = SimpleNamespace(max_epochs=10)
    with pytest.raises(ValueError, match="model.aux_heads=true"):
        _paper_schedule(tmp_path).setup(trainer, EmotionModule(aux_heads=False), "fit")


def test_single_branch_model_trains_end_to_end(tmp_path):
    sched = _paper_schedule(tmp_path)
    module = EmotionModule(inputs="face", attention="none", fusion="none", aux_heads=True)
    assert module.net.face_head is None
    sched.setup(SimpleNamespace(max_epochs=10), module, "fit")
    assert not sched.active


def test_aux_heads_follow_the_branches(tmp_path):
    assert EmotionModule(aux_heads=True).net.has_aux_heads
    assert not EmotionModule(aux_heads=False).net.has_aux_heads
    assert not EmotionModule(inputs="context", fusion="none", aux_heads=True).net.has_aux_heads
    with pytest.raises(ValueError, match="aux_heads=False"):
        GlamorNet(inputs="context", fusion="none", aux_heads=True)
    # the plain recipe adds them with staged training only; the default recipe (context) trains them always
    assert compose_config("train", tmp_path, ["recipe=plain", "callbacks=staged"]).model.aux_heads is True
    assert compose_config("train", tmp_path, ["recipe=plain"]).model.aux_heads is False
    assert compose_config("train", tmp_path, ["recipe=plain", "callbacks=none"]).model.aux_heads is False
    assert compose_config("train", tmp_path).model.aux_heads is True
    # the fused prediction does not read the auxiliary heads
    torch.manual_seed(0)
    module = EmotionModule(aux_heads=True).eval()
    face = torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8)
    ctx = torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8)
    out = module(face, ctx)
    assert out.face_logits.shape == out.context_logits.shape == (2, 7)
    with torch.no_grad():
        module.net.face_head[0].weight.add_(1.0)
    assert torch.equal(module(face, ctx).logits, out.logits)
