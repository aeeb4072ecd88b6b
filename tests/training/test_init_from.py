"""`init_from=CKPT`: a new run that starts from a checkpoint's net weights (fine-tuning), with its own optimiser,
schedule and epochs; a wrong architecture is refused naming what differs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compose_config
from glamor_lightning.analysis.predictions import read_predictions
from glamor_lightning.checkpoints import load_module, load_net_weights
from glamor_lightning.errors import CheckpointError, UserError
from glamor_lightning.eval import evaluate
from glamor_lightning.module import EmotionModule
from glamor_lightning.train import train


def test_the_net_starts_from_the_checkpoints_weights(tiny_ckpt):
    torch.manual_seed(1)
    module = EmotionModule()
    assert load_net_weights(module, tiny_ckpt) == []
    source = load_module(tiny_ckpt).net.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in module.net.state_dict().items())


def test_auxiliary_heads_the_checkpoint_lacks_start_fresh(tiny_ckpt):
    torch.manual_seed(1)
    module = EmotionModule(aux_heads=True, aux_loss_weight=1.0)
    head = module.net.face_head[0].weight.clone()
    assert load_net_weights(module, tiny_ckpt) == ["context_head", "face_head"]
    assert torch.equal(module.net.face_head[0].weight, head)
    assert torch.equal(module.net.classifier[0].weight, load_module(tiny_ckpt).net.classifier[0].weight)


def test_another_architecture_is_refused_naming_it(tiny_ckpt):
    with pytest.raises(CheckpointError, match=r"do not fit this run's model \(backbone='original', attention='none'"):
        load_net_weights(EmotionModule(attention="none"), tiny_ckpt)


# one precision on both sides of the comparison (under `auto` a run measures its own; eval takes the checkpoint's)
FAST = [
    "trainer.accelerator=cpu",
    "logger=csv",
    "data.cache_workers=0",
    "callbacks.rich_progress_bar=null",
    "trainer.precision=32-true",
]


def test_a_run_from_init_from_predicts_like_the_checkpoint_before_any_step(tiny_ckpt, synth_root, tmp_path):
    # the checkpoint's own recipe: the default one's gate floor would change the fused prediction
    run = [f"data.root={synth_root}", "trainer.max_epochs=0", "recipe=plain", *FAST]
    train(compose_config("train", tmp_path / "started", [f"init_from={tiny_ckpt}", *run]))
    train(compose_config("train", tmp_path / "fresh", run))
    evaluate(
        compose_config("eval", tmp_path / "eval", [f"ckpt_path={tiny_ckpt}", "logger=csv", "trainer.precision=32-true"])
    )
    started, fresh, checkpoint = (
        read_predictions(tmp_path / d / "predictions.csv").probs for d in ("started", "fresh", "eval")
    )
    assert np.allclose(started, checkpoint, atol=1e-5)
    assert not np.allclose(fresh, checkpoint, atol=1e-3)  # without init_from the same run predicts otherwise


def test_init_from_and_ckpt_path_together_are_refused(tiny_ckpt, synth_root, tmp_path):
    cfg = compose_config(
        "train", tmp_path, [f"data.root={synth_root}", f"init_from={tiny_ckpt}", f"ckpt_path={tiny_ckpt}", *FAST]
    )
    with pytest.raises(UserError, match="set one of them"):
        train(cfg)
