"""GradientModulation (OGM-GE): the coefficients, what they do to each branch's gradients in a real fit, GE's
noise and its seeding, what is logged, and the errors for a model without trained auxiliary heads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from conftest import compose_config
from glamor_lightning.callbacks.modulation import GradientModulation, coefficients, noise_generator
from training_helpers import FAST, ONE_EPOCH_STAGES, REPO, epoch_rows, fit, read_metrics

FACE, CONTEXT = ("face_encoder",), ("context_encoder", "attention")
ON = ["callbacks.modulation.enabled=true", "model.aux_heads=true", "model.aux_loss_weight=1.0"]


@pytest.mark.parametrize(
    ("s_face", "s_context", "alpha", "expected"),
    [
        # face leads: ratio 6/3 = 2, k_face = 1 - tanh(0.5 * (2 - 1)) = 1 - 0.46212 = 0.53788
        (6.0, 3.0, 0.5, (0.5378828427399902, 1.0)),
        # context leads: 1/ratio = 4/1 = 4, k_context = 1 - tanh(0.1 * 3) = 1 - 0.2913126 = 0.7086874
        (1.0, 4.0, 0.1, (1.0, 0.7086873875484091)),
        # balanced: nobody is slowed
        (2.5, 2.5, 0.8, (1.0, 1.0)),
        # a head at 0: the leader's k is (about) 0
        (3.0, 0.0, 0.1, (0.0, 1.0)),
    ],
)
def test_ogm_coefficients_on_hand_made_scores(s_face, s_context, alpha, expected):
    assert coefficients(s_face, s_context, alpha) == pytest.approx(expected, abs=1e-12)


def test_ge_noise_depends_on_seed_and_step_only():
    def draw(seed: int, step: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)  # what StepSeed does per rank and step: must not matter
        return torch.randn(100, generator=noise_generator(seed, step))

    same = draw(5, 3, global_seed=0)
    assert torch.equal(same, draw(5, 3, global_seed=1))
    assert not torch.equal(same, draw(5, 4, global_seed=0))
    assert not torch.equal(same, draw(6, 3, global_seed=0))


class GradProbe(Callback):
    """Per optimiser step: the branches' gradients before modulation (after backward), after it (placed after
    GradientModulation), the module's branch scores, and the coefficients the callback applied."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    @staticmethod
    def _grads(pl_module) -> dict[str, torch.Tensor]:
        parts = dict(pl_module.net.named_children())
        return {
            f"{part}.{name}": p.grad.detach().clone()
            for part in (*FACE, *CONTEXT)
            for name, p in parts[part].named_parameters()
            if p.grad is not None
        }

    def on_after_backward(self, trainer, pl_module) -> None:
        s_face, s_context = (float(s) for s in pl_module.branch_scores)
        self.steps.append(
            {"epoch": trainer.current_epoch, "scores": (s_face, s_context), "before": self._grads(pl_module)}
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        modulation = next(cb for cb in trainer.callbacks if isinstance(cb, GradientModulation))
        self.steps[-1].update(after=self._grads(pl_module), applied=modulation.last_coefficients)


def _run(synth_root, out, overrides, batches: int = 1) -> GradProbe:
    probe = GradProbe()
    cfg = compose_config(
        "train",
        out,
        [
            f"data.root={synth_root}",
            *FAST,
            *ON,
            f"+trainer.limit_train_batches={batches}",
            "+trainer.limit_val_batches=1",
            *overrides,
        ],
    )
    fit(cfg, [probe])
    return probe


def _branch(key: str) -> str:
    return "face" if key.startswith(FACE) else "context"


@pytest.fixture(scope="module")
def modulated(synth_root, tmp_path_factory):
    """OGM without noise, alpha 2, modulating from epoch 1: epoch 0 is left alone, epoch 1 is modulated."""
    out = tmp_path_factory.mktemp("ogm")
    probe = _run(
        synth_root,
        out,
        [
            "trainer.max_epochs=2",
            "callbacks.modulation.noise=false",
            "callbacks.modulation.alpha=2.0",
            "callbacks.modulation.start_epoch=1",
        ],
    )
    return probe, epoch_rows(read_metrics(out))


def test_ogm_scales_the_leading_branchs_gradient_by_k(modulated):
    probe, _ = modulated
    step = next(s for s in probe.steps if s["epoch"] == 1)
    k = coefficients(*step["scores"], alpha=2.0)  # from the module's branch scores, by the tested function
    assert step["applied"] == pytest.approx(k)
    assert min(k) < 0.99 and max(k) == 1.0  # one branch leads and is slowed
    for key, before in step["before"].items():
        after, k_branch = step["after"][key], dict(zip(("face", "context"), k))[_branch(key)]
        if k_branch == 1.0:
            assert torch.equal(after, before), key  # the other branch's gradient is untouched
        else:
            torch.testing.assert_close(after, k_branch * before, rtol=1e-6, atol=0, msg=key)
    assert {_branch(key) for key in step["before"]} == {"face", "context"}


def test_no_modulation_outside_the_window(modulated):
    probe, _ = modulated
    step = next(s for s in probe.steps if s["epoch"] == 0)
    assert step["applied"] == (1.0, 1.0)
    assert all(torch.equal(step["after"][key], before) for key, before in step["before"].items())


def test_coefficients_and_score_ratio_are_logged_per_epoch(modulated):
    probe, rows = modulated
    for epoch in (0, 1):
        step = next(s for s in probe.steps if s["epoch"] == epoch)  # one step per epoch: its mean is the step
        s_face, s_context = step["scores"]
        assert rows[epoch]["train/ogm_coeff_face"] == pytest.approx(step["applied"][0], rel=1e-6)
        assert rows[epoch]["train/ogm_coeff_context"] == pytest.approx(step["applied"][1], rel=1e-6)
        assert rows[epoch]["train/score_ratio"] == pytest.approx(s_face / s_context, rel=1e-6)


def _standard_noise(step: dict) -> dict[str, torch.Tensor]:
    """GE's draw per parameter: (after - k * before) / std(before)."""
    k = dict(zip(("face", "context"), step["applied"]))
    return {
        key: (step["after"][key] - k[_branch(key)] * before) / before.std()
        for key, before in step["before"].items()
        if before.numel() > 1 and before.std() > 0
    }


@pytest.fixture(scope="module")
def ge_runs(synth_root, tmp_path_factory):
    """OGM-GE, two steps, the same modulation seed under two global seeds (other weights, other dropout)."""
    common = ["trainer.max_epochs=1", "callbacks.modulation.seed=5"]
    return [
        _run(synth_root, tmp_path_factory.mktemp(f"ge{seed}"), [*common, f"seed={seed}"], batches=2) for seed in (1, 2)
    ]


def test_ge_noise_is_fixed_by_seed_and_step(ge_runs):
    one, two = ge_runs
    assert not torch.equal(
        one.steps[0]["before"]["face_encoder.body.4.weight"], two.steps[0]["before"]["face_encoder.body.4.weight"]
    )  # other gradients
    for i in (0, 1):
        a, b = _standard_noise(one.steps[i]), _standard_noise(two.steps[i])
        assert a.keys() == b.keys() and {_branch(key) for key in a} == {"face", "context"}
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-3, msg=key)
    first, second = _standard_noise(one.steps[0]), _standard_noise(one.steps[1])
    assert not torch.allclose(first["face_encoder.body.4.weight"], second["face_encoder.body.4.weight"])


def test_ge_noise_has_the_gradients_std(ge_runs):
    biggest = max(ge_runs[0].steps[0]["before"].items(), key=lambda kv: kv[1].numel())[0]
    z = _standard_noise(ge_runs[0].steps[0])[biggest]
    assert z.numel() > 10_000 and z.mean().abs() < 0.05 and math.isclose(z.std().item(), 1.0, abs_tol=0.05)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["callbacks.modulation.enabled=true"], "the model has none: set model.aux_heads=true model.aux_loss_weight"),
        (
            ["callbacks.modulation.enabled=true", "model.aux_heads=true"],
            "their loss never counts.*set model.aux_heads=true model.aux_loss_weight",
        ),
        (
            ["callbacks.modulation.enabled=true", "model.inputs=face", "model.attention=none", "model.fusion=none"],
            "the model has one.*enabled=false",
        ),
    ],
)
def test_modulation_without_trained_auxiliary_heads_is_a_clear_error(synth_root, tmp_path, overrides, message):
    # the plain recipe: the default one trains the auxiliary heads (their loss counts)
    cfg = compose_config("train", tmp_path, [f"data.root={synth_root}", "recipe=plain", *FAST, *overrides])
    with pytest.raises(ValueError, match=message):
        fit(cfg)


def test_parts_a_stage_freezes_are_left_alone(synth_root, tmp_path):
    """`callbacks=staged`, one epoch per stage: in `fusion` (epoch 1) the branches have no gradient; OGM-GE
    leaves them without one (no noise turns into a step), and modulates again in `joint` (epoch 2)."""
    probe = _run(synth_root, tmp_path, [*ONE_EPOCH_STAGES, "trainer.max_epochs=3", "callbacks.modulation.alpha=2.0"])
    after = {s["epoch"]: s["after"] for s in probe.steps}
    assert after[1] == {}
    assert {_branch(key) for key in after[0]} == {_branch(key) for key in after[2]} == {"face", "context"}
    assert min(probe.steps[2]["applied"]) < 1.0


def test_staged_training_counts_the_auxiliary_heads(tmp_path):
    """`callbacks=staged` trains the heads in its first stage: modulation accepts it (setup, no fit)."""
    import lightning as L

    cfg = compose_config("train", tmp_path, ["callbacks=staged", "callbacks.modulation.enabled=true"])
    cbs = [instantiate(cfg.callbacks.stages), instantiate(cfg.callbacks.modulation)]
    trainer = L.Trainer(callbacks=cbs, logger=False, accelerator="cpu", enable_progress_bar=False)
    cbs[1].setup(trainer, instantiate(cfg.model), "fit")
    assert cbs[1].active


def test_the_default_config_has_it_off(tmp_path):
    modulation = instantiate(compose_config("train", tmp_path).callbacks.modulation)
    assert not modulation.enabled and modulation.noise and modulation.alpha == 0.1
    with pytest.raises(ValueError, match="end_epoch .* must be after start_epoch"):
        GradientModulation(enabled=True, start_epoch=3, end_epoch=3)


class RankAgreement(Callback):
    """After every step, on rank 0: whether both DDP processes hold the same weights, and their coefficients."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weights = trainer.strategy.all_gather(torch.cat([p.detach().flatten() for p in pl_module.parameters()]))
        modulation = next(cb for cb in trainer.callbacks if isinstance(cb, GradientModulation))
        coeffs = trainer.strategy.all_gather(torch.tensor(modulation.last_coefficients)).tolist()
        if trainer.global_rank == 0:
            print(f"AGREE weights={torch.equal(weights[0], weights[1])} coeffs={coeffs}", flush=True)


def _ddp_main(root: str, out: str) -> None:
    """2-process CPU DDP fit with OGM-GE (Lightning starts rank 1 by running this module again)."""
    overrides = [f"data.root={root}", *FAST, *ON, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    overrides += ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1"]
    fit(compose_config("train", Path(out), [*overrides, "callbacks.modulation.alpha=2.0"]), [RankAgreement()])


@pytest.mark.slow
def test_ddp_processes_modulate_alike(synth_root, tmp_path):
    """Under DDP every process computes the same coefficients (scores summed over ranks) and adds the same
    GE noise (seeded by step, not by torch's per-rank generator): the replicas' weights stay equal."""
    tests = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(map(str, (tests, tests / "training", REPO))))
    proc = subprocess.run(
        [sys.executable, "-m", "test_modulation", str(synth_root), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("AGREE")]
    assert len(lines) == 3 and all("weights=True" in line for line in lines), lines
    for line in lines:
        face_context = json.loads(line.split("coeffs=")[1])  # [[k_face, k_context] of rank 0, ... of rank 1]
        assert face_context[0] == face_context[1] and min(face_context[0]) < 1.0


if __name__ == "__main__":
    _ddp_main(*sys.argv[1:3])
