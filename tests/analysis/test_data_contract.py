"""The data contract: a checkpoint says what its inputs were, and eval / export / attention use it, not defaults."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from conftest import compose_config, cpu_trainer, fit_checkpoint
from glamor_lightning.checkpoints import load_module, read_checkpoint
from glamor_lightning.cli import main as glamor
from glamor_lightning.data.contract import CHECKPOINT_KEY, DataContract, datamodule_from_checkpoint
from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.eval import evaluate
from glamor_lightning.export import onnx_session

#: a geometry other than the defaults (96 / 128x171 / 112)
SMALL = {"face_size": 64, "context_size": (80, 107), "crop_size": 64}
N_TEST = 7 * 4  # tests/conftest.py SMALL_SYNTH


@pytest.fixture(scope="module")
def small_ckpt(synth_root, tmp_path_factory):
    """A checkpoint trained on 64-pixel faces and crops."""
    return fit_checkpoint(synth_root, tmp_path_factory.mktemp("small") / "small.ckpt", data=dict(SMALL))


def eval_config(tmp_path, ckpt, *overrides):
    return compose_config(
        "eval",
        tmp_path,
        [
            f"ckpt_path={ckpt}",
            "trainer.accelerator=cpu",
            "logger=csv",
            "trainer.precision=32-true",
            "data.cache_workers=0",
            *overrides,
        ],
    )


def test_every_checkpoint_holds_its_data_contract(small_ckpt, synth_root):
    saved = read_checkpoint(small_ckpt)[CHECKPOINT_KEY]
    assert saved["face_size"] == 64 and saved["context_size"] == [80, 107] and saved["crop_size"] == 64
    assert saved["mask_face"] is True and saved["root"] == str(synth_root.resolve())
    assert saved["class_names"] == ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    assert load_module(small_ckpt).data_contract == DataContract(**{**saved, "context_size": (80, 107)})


def test_eval_tests_on_the_checkpoints_root_and_geometry_by_default(small_ckpt, synth_root, tmp_path):
    """No data.root: the root the model was trained on (before: data/synthcaer, or a failure), and its
    64-pixel inputs (before: 96/112 without a word)."""
    metrics = evaluate(eval_config(tmp_path, small_ckpt))
    assert metrics["test/n"] == N_TEST
    # the reference: the same checkpoint tested on a data module built by hand with the training geometry
    module = load_module(small_ckpt, eval_mode=False)
    dm = EmotionDataModule(str(synth_root), cache_workers=0, eval_batch_size=128, **SMALL, mask_face=True)
    trainer = cpu_trainer()
    expected = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert metrics["test/acc"] == expected["test/acc"]
    assert metrics["test/loss"] == pytest.approx(expected["test/loss"], rel=1e-6)


def test_eval_on_another_root_says_so(small_ckpt, synth_root, tmp_path, caplog):
    other = tmp_path / "copy"
    shutil.copytree(synth_root, other, ignore=shutil.ignore_patterns(".cache"))
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(eval_config(tmp_path, small_ckpt, f"data.root={other}"))
    assert metrics["test/n"] == N_TEST
    assert f"data root {other.resolve()} (given) instead of {synth_root.resolve()}" in caplog.text


@pytest.mark.parametrize(
    "override, field",
    [("data.face_size=96", "face_size"), ("data.crop_size=112", "crop_size"), ("data.mask_face=false", "mask_face")],
)
def test_eval_refuses_inputs_the_model_was_not_trained_on(small_ckpt, tmp_path, override, field):
    with pytest.raises(ValueError, match=f"{field}: trained with"):
        evaluate(eval_config(tmp_path, small_ckpt, override))


def test_a_checkpoint_without_contract_gets_one_from_its_data_settings(small_ckpt, tmp_path, caplog):
    ckpt = torch.load(small_ckpt, weights_only=True)
    del ckpt[CHECKPOINT_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with caplog.at_level(logging.WARNING):
        contract = load_module(old).data_contract
    assert (contract.face_size, contract.context_size, contract.crop_size) == (64, (80, 107), 64)
    assert "has no data contract" in caplog.text


def test_a_contract_without_root_needs_one(small_ckpt):
    ckpt = read_checkpoint(small_ckpt)
    contract = DataContract(**{**ckpt[CHECKPOINT_KEY], "root": None})
    with pytest.raises(ValueError, match="does not name the data root .* DATA=ROOT"):
        datamodule_from_checkpoint(ckpt, contract, {})


def test_export_uses_the_trained_input_sizes(small_ckpt, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    assert glamor(["export", "--ckpt", str(small_ckpt), "--out", str(out)]) == 0
    session = onnx_session(out)
    shapes = {i.name: i.shape[1:] for i in session.get_inputs()}
    assert shapes == {"face": [3, 64, 64], "context": [3, 64, 64]}
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["glamor.context_size"]) == [80, 107] and json.loads(meta["glamor.mask_face"]) is True
    assert json.loads(meta["glamor.class_names"])[0] == "Anger"


def test_attention_figures_use_the_checkpoints_root(small_ckpt, tmp_path, capsys):
    assert glamor(["attention", "--ckpt", str(small_ckpt), "--n", "2", "--out", str(tmp_path / "fig")]) == 0
    assert len(list((tmp_path / "fig").glob("*_attention.png"))) == 2
