"""Real configs composed by Hydra: a short fit + test, then `eval` on the saved checkpoint."""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.errors import InstantiationException

from conftest import compose_config
from glamor_lightning.analysis.sweeps import SWEEP_METRICS
from glamor_lightning.eval import evaluate
from glamor_lightning.module import EmotionModule
from glamor_lightning.train import train

FAST = [
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=csv",
    "data.cache_workers=0",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    cfg = compose_config("train", out, [f"data.root={synth_root}", "model.backbone=original", *FAST])
    metrics = train(cfg)
    return out, metrics


def test_train_writes_checkpoints_and_reports_test_accuracy(trained):
    out, metrics = trained
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["epoch_000.ckpt", "last.ckpt"]
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert {f"test/acc_{c}" for c in ("Anger", "Neutral", "Surprise")} <= set(metrics)
    assert "val/acc_best" in metrics and "train/loss_epoch" in metrics
    assert (out / "csv" / "metrics.csv").is_file()


def test_every_metric_a_sweep_may_optimise_is_logged(trained):
    """The sweep checker's declared list (SWEEP_METRICS) is what a training run sends to its loggers (the CSV
    logger's columns are the names W&B receives too) and what the entry point can return as optimized_metric."""
    out, metrics = trained
    with (out / "csv" / "metrics.csv").open() as f:
        columns = set(next(csv.reader(f)))
    assert set(SWEEP_METRICS) <= columns, sorted(set(SWEEP_METRICS) - columns)
    assert set(SWEEP_METRICS) <= set(metrics), sorted(set(SWEEP_METRICS) - set(metrics))


def test_eval_reproduces_the_training_runs_test_accuracy_exactly(trained, synth_root, tmp_path):
    out, metrics = trained
    cfg = compose_config(
        "eval",
        tmp_path,
        [
            f"data.root={synth_root}",
            "trainer.accelerator=cpu",
            f"ckpt_path={out / 'checkpoints' / 'epoch_000.ckpt'}",
            "data.cache_workers=0",
        ],
    )
    result = evaluate(cfg)
    assert result["test/acc"] == metrics["test/acc"]
    assert result["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)


def test_checkpoint_round_trip_rebuilds_the_model_without_config(trained):
    out, _ = trained
    path = out / "checkpoints" / "last.ckpt"
    model = EmotionModule.load_from_checkpoint(path, map_location="cpu").eval()
    assert model.hparams.backbone == "original" and model.hparams.attention == "gla"
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    face = torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8)
    ctx = torch.randint(0, 255, (2, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(face, ctx), model(face, ctx)
    assert a.logits.shape == (2, 7) and torch.equal(a.logits, b.logits)


def test_unknown_backbone_is_a_clear_error(synth_root, tmp_path):
    cfg = compose_config("train", tmp_path, [f"data.root={synth_root}", "model.backbone=no_such_net", *FAST])
    with pytest.raises(InstantiationException, match="Unknown backbone 'no_such_net'; known: .*original"):
        train(cfg)


def test_wandb_logs_offline_without_login(synth_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = compose_config(
        "train",
        tmp_path,
        [
            f"data.root={synth_root}",
            "logger=wandb",
            *FAST[:2],
            *FAST[3:],
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "test=false",
        ],
    )
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_a_run_with_weight_averaging_tests_the_averaged_weights_it_validated(synth_root, tmp_path):
    """Lightning's weight averaging validates and checkpoints the averaged weights, and puts the trained ones back
    when a checkpoint is loaded: the run's test of its best checkpoint must score the averaged weights (those the
    checkpoint's state_dict holds, which `eval` tests), not the trained ones."""
    out = tmp_path / "train"
    ema = "+callbacks.ema={_target_:lightning.pytorch.callbacks.EMAWeightAveraging,decay:0.9}"
    metrics = train(compose_config("train", out, [f"data.root={synth_root}", "model.backbone=original", *FAST, ema]))
    cfg = compose_config(
        "eval",
        tmp_path / "eval",
        [
            f"data.root={synth_root}",
            "trainer.accelerator=cpu",
            f"ckpt_path={out / 'checkpoints' / 'epoch_000.ckpt'}",
            "data.cache_workers=0",
        ],
    )
    assert evaluate(cfg)["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)
