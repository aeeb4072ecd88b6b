"""Exact resume: a run SIGKILLed mid-epoch and resumed from `last.ckpt` ends with the weights, optimiser
state and metrics of the run that was never stopped (CPU, deterministic; data order, augmentation,
dropout and the stage in force included)."""

from __future__ import annotations

import signal

import pytest
import torch

from conftest import compose_config
from glamor_lightning.train import train
from training_helpers import FAST, ONE_EPOCH_STAGES, epoch_rows, finish, read_metrics, start_module

STEPS_PER_EPOCH = 4  # of the 7 batches of 8 in an epoch's order
#: branches in epoch 0, fusion (encoders frozen, BatchNorm in eval mode) in epoch 1, where the kill lands;
#: last.ckpt every 3 steps: steps 3 (mid-epoch 0), 4 (end of epoch 0), 6 (epoch 1, after 2 of 4 batches)
COMMON = [
    *FAST,
    *ONE_EPOCH_STAGES,
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    f"+trainer.limit_train_batches={STEPS_PER_EPOCH}",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "data.augment=true",
]
KILL_AT = 7  # before the 8th step: step 7 is lost with the process


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    common = [f"data.root={synth_root}", *COMMON]
    a_dir, b_dir = tmp_path_factory.mktemp("uninterrupted"), tmp_path_factory.mktemp("killed")
    # the run to be killed goes in a subprocess, alongside the uninterrupted one in this process
    killed = start_module(
        "glamor_lightning.train",
        [*common, "+callbacks.killer._target_=training_helpers.KillAt", f"+callbacks.killer.step={KILL_AT}"],
        b_dir,
    )
    a = train(compose_config("train", a_dir, common))
    proc = finish(killed, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed_at = torch.load(b_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # resume in the same run folder, as one does after a crash
    b = train(compose_config("train", b_dir, [*common, f"ckpt_path={b_dir / 'checkpoints' / 'last.ckpt'}"]))
    return a, b, a_dir, b_dir, killed_at


def _final(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_the_kill_left_a_mid_epoch_checkpoint_in_the_fusion_stage(runs):
    *_, killed_at = runs
    assert killed_at["epoch"] == 1 and killed_at["global_step"] == 6
    assert killed_at["callbacks"]["StageScheduler"]["stage_name"] == "fusion"
    assert killed_at["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]


def test_resumed_run_ends_with_the_same_weights_and_optimizer_state(runs):
    _, _, a_dir, b_dir, _ = runs
    a, b = _final(a_dir), _final(b_dir)
    assert not list((b_dir / "checkpoints").glob(".*.tmp"))  # last.ckpt is written atomically
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, different
    for pa, pb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert [g["lr"] for g in a["optimizer_states"][0]["param_groups"]] == [
        g["lr"] for g in b["optimizer_states"][0]["param_groups"]
    ]


def test_resumed_run_logs_the_same_metrics(runs):
    a, b, a_dir, b_dir, _ = runs
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if not k.endswith("_step")} == {
        k: v for k, v in b.items() if not k.endswith("_step")
    }
    # the interrupted epoch's epoch-level metrics (train/* averaged over the whole epoch, val/*, stage)
    ea, eb = epoch_rows(read_metrics(a_dir)), epoch_rows(read_metrics(b_dir))
    assert ea[1] == eb[1]


def test_a_run_resumed_with_other_model_settings_is_refused_naming_them(synth_root, tmp_path):
    """A run trained before the default recipe changed (`recipe=plain`) resumed under the new default: one clear
    error naming each setting and `recipe=plain`, not Lightning's missing-keys traceback; with it, it resumes."""
    from glamor_lightning.errors import UserError

    common = [f"data.root={synth_root}", *FAST, "trainer.max_epochs=1", "+trainer.limit_train_batches=1"]
    train(compose_config("train", tmp_path / "a", ["recipe=plain", *common]))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resume = [f"data.root={synth_root}", *FAST, "trainer.max_epochs=2", "+trainer.limit_train_batches=1"]
    with pytest.raises(UserError) as err:
        train(compose_config("train", tmp_path / "b", [*resume, f"ckpt_path={last}"]))
    message = str(err.value)
    assert "it was trained with the plain recipe: add recipe=plain" in message
    assert "model.aux_heads: checkpoint False, this run True" in message
    assert "model.fusion_floor: checkpoint 0.0, this run 0.4" in message
    metrics = train(compose_config("train", tmp_path / "c", ["recipe=plain", *resume, f"ckpt_path={last}"]))
    assert "val/acc" in metrics


def test_a_run_resumes_with_other_execution_settings(synth_root, tmp_path):
    """How a run executes may change on resume (`train.RESUME_FREE`): memory layout, the SGD implementation and the
    original encoder's fused kernel, e.g. `model.fused_bn_pool_relu=false` to go on with torch's layers."""
    common = [f"data.root={synth_root}", *FAST, "+trainer.limit_train_batches=1"]
    train(compose_config("train", tmp_path / "a", [*common, "trainer.max_epochs=1"]))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    other = ["model.channels_last=false", "model.fused_sgd=false", "model.fused_bn_pool_relu=false"]
    metrics = train(
        compose_config("train", tmp_path / "b", [*common, "trainer.max_epochs=2", *other, f"ckpt_path={last}"])
    )
    assert "val/acc" in metrics


def test_step_seeding_draws_as_torch_manual_seed_does():
    """The per-step reseed (`StepSeed`) sets the CPU generator exactly as `torch.manual_seed` would."""
    from glamor_lightning.callbacks.resume import seed_generators

    torch.manual_seed(123)
    expected = torch.rand(5), torch.randint(0, 1000, (3,))
    torch.manual_seed(7)  # elsewhere
    seed_generators(123)
    got = torch.rand(5), torch.randint(0, 1000, (3,))
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
