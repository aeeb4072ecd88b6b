"""Evaluation report: predictions file round trip, the callback's files, `eval` writing them, W&B."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import torch

from conftest import compose_config, cpu_trainer, fit_checkpoint
from glamor_lightning.analysis.predictions import (
    PredictionsFileError,
    confusion_matrix,
    per_class_accuracy,
    read_predictions,
    write_predictions,
)
from glamor_lightning.callbacks.report import EvalReport
from glamor_lightning.checkpoints import load_module
from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.eval import evaluate


def test_predictions_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=5)
    paths = [f"test/{c}/x,{i}.png" for i, c in enumerate(CLASSES[:5])]  # a comma survives quoting
    true = list(CLASSES[:5])
    pred = [CLASSES[int(i)] for i in probs.argmax(1)]
    path = write_predictions(tmp_path / "p.csv", paths, true, pred, probs, CLASSES)
    back = read_predictions(path)
    assert back.paths == paths and back.true == true and back.predicted == pred
    assert back.classes == CLASSES
    np.testing.assert_allclose(back.probs, probs, atol=5e-7)
    assert back.accuracy == pytest.approx(np.mean([t == p for t, p in zip(true, pred)]))
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left over


def test_malformed_predictions_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,true\nx.png,Happy\n")
    with pytest.raises(PredictionsFileError, match="missing column.*predicted"):
        read_predictions(bad)
    bad.write_text("path,true,predicted\na.png,Happy,Sad\na.png,Happy,Sad\n")
    with pytest.raises(PredictionsFileError, match=r"bad.csv:3: path 'a.png' repeats line 2"):
        read_predictions(bad)


def test_per_class_accuracy_and_confusion_matrix():
    true = ["Happy", "Happy", "Sad", "Fear"]
    pred = ["Happy", "Sad", "Sad", "Happy"]
    rows = {r["class"]: r for r in per_class_accuracy(true, pred, CLASSES)}
    assert rows["Happy"]["accuracy"] == 0.5 and rows["Sad"]["accuracy"] == 1.0 and rows["Fear"]["accuracy"] == 0
    assert np.isnan(rows["Anger"]["accuracy"])
    cm = confusion_matrix(true, pred, CLASSES)
    assert cm.sum() == 4 and cm[CLASSES.index("Happy"), CLASSES.index("Sad")] == 1


@pytest.fixture(scope="module")
def ckpt(synth_root, tmp_path_factory):
    return fit_checkpoint(synth_root, tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def test_report_callback_writes_consistent_files(ckpt, synth_root, tmp_path):
    model = load_module(ckpt, eval_mode=False)
    dm = EmotionDataModule(str(synth_root), batch_size=5, cache_workers=0)
    report = EvalReport(output_dir=tmp_path)
    trainer = cpu_trainer(
        callbacks=[report],
    )
    trainer.test(model, datamodule=dm)
    preds = read_predictions(tmp_path / "predictions.csv")
    test_rows = [r for r in dm.rows if r.split == "test"]
    assert preds.paths == [r.path for r in test_rows]  # every test sample once, in faces.csv order
    assert preds.true == [r.label for r in test_rows]
    assert preds.accuracy == pytest.approx(float(trainer.callback_metrics["test/acc"]))
    np.testing.assert_allclose(preds.probs.sum(1), 1.0, atol=1e-5)
    assert preds.predicted == [CLASSES[i] for i in preds.probs.argmax(1)]
    with (tmp_path / "per_class_accuracy.csv").open() as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    for c in CLASSES:
        assert float(rows[c]["accuracy"]) == pytest.approx(float(trainer.callback_metrics[f"test/acc_{c}"]), abs=1e-6)
    assert int(rows["all"]["samples"]) == len(test_rows)
    with (tmp_path / "confusion_matrix.csv").open() as fh:
        counts = np.array([list(map(int, r[1:])) for r in list(csv.reader(fh))[1:]])
    assert counts.sum() == len(test_rows) and (counts.sum(1) == 4).all()
    png = tmp_path / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000


def test_eval_entry_point_writes_the_report_next_to_the_metrics(ckpt, synth_root, tmp_path):
    cfg = compose_config(
        "eval",
        tmp_path,
        [
            f"data.root={synth_root}",
            "trainer.accelerator=cpu",
            f"ckpt_path={ckpt}",
            "data.cache_workers=0",
            "callbacks.rich_progress_bar=null",
        ],
    )
    metrics = evaluate(cfg)
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    for name in ("predictions.csv", "per_class_accuracy.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert (tmp_path / name).is_file(), name
    assert read_predictions(tmp_path / "predictions.csv").accuracy == pytest.approx(metrics["test/acc"])


def test_report_is_logged_to_wandb_when_on(ckpt, synth_root, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    logged = {}
    monkeypatch.setattr("wandb.sdk.wandb_run.Run.log", lambda self, data, *a, **k: logged.update(data))
    model = load_module(ckpt, eval_mode=False)
    dm = EmotionDataModule(str(synth_root), batch_size=16, cache_workers=0)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="glamor-test")
    trainer = L.Trainer(
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[EvalReport(output_dir=tmp_path)],
    )
    trainer.test(model, datamodule=dm)
    import wandb

    wandb.finish()
    assert isinstance(logged["test/predictions"], wandb.Table)
    assert len(logged["test/predictions"].data) == 28
    assert isinstance(logged["test/confusion_matrix"], wandb.Image)
    assert [r[0] for r in logged["test/per_class_accuracy"].data] == [*CLASSES, "all"]


def test_gather_is_a_single_list_without_ddp():
    from glamor_lightning.callbacks.report import gather_to_rank_zero

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert gather_to_rank_zero({"x": torch.ones(1)}, trainer)[0]["x"].item() == 1.0


@pytest.mark.slow
def test_report_under_ddp_has_every_sample_once(ckpt, synth_root, tmp_path):
    """Two CPU processes (gloo): rank 0 gathers both shards; the report equals the single-process one."""
    model = load_module(ckpt, eval_mode=False)
    dm = EmotionDataModule(str(synth_root), batch_size=5, cache_workers=0)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[EvalReport(output_dir=tmp_path / "ddp")],
    )
    trainer.test(model, datamodule=dm)
    single = cpu_trainer(
        callbacks=[EvalReport(output_dir=tmp_path / "one")],
    )
    single.test(
        load_module(ckpt, eval_mode=False), datamodule=EmotionDataModule(str(synth_root), batch_size=5, cache_workers=0)
    )
    ddp, one = (
        read_predictions(tmp_path / "ddp" / "predictions.csv"),
        read_predictions(tmp_path / "one" / "predictions.csv"),
    )
    assert ddp.paths == one.paths and ddp.predicted == one.predicted and len(ddp) == 28
    np.testing.assert_allclose(ddp.probs, one.probs, atol=1e-5)
