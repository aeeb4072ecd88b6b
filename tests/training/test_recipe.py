"""The training recipes (`recipe=plain|context`, conf/recipe/): what each sets, the models each is for, and that
the paper's experiments keep the recipe their results were made with."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_config
from glamor_lightning.errors import UserError
from glamor_lightning.hydra_utils import CONF_DIR
from glamor_lightning.train import check_recipe, train
from training_helpers import FAST

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_the_context_recipe_trains_glamor_net_with_its_remedies(tmp_path):
    cfg = compose_config("train", tmp_path, ["recipe=context"])
    assert cfg.recipe.name == "context"
    module = instantiate(cfg.model)
    assert module.net.has_aux_heads and module.net.fusion.floor == pytest.approx(0.4)
    assert module.hparams.aux_loss_weight == 1.0 and not module.hparams.residual_context
    assert module.net.context_head_input == "pooled"  # the context head reads no face (results/context_scene_12ep.md)
    lrs = {g["name"]: g.get("lr", cfg.model.lr) for g in module.param_groups()}
    assert lrs["context_encoder"] == lrs["attention"] == pytest.approx(3 * cfg.model.lr)
    assert lrs["face_encoder"] == lrs["fusion"] == pytest.approx(cfg.model.lr)


@pytest.mark.parametrize(
    "backbone, base, context_rate",
    [("mobilenetv2", 0.03, 0.03), ("resnet18", 0.01, 0.03), ("original", 0.01, 0.03)],
)
def test_each_backbone_trains_at_its_own_learning_rate_under_the_context_recipe(tmp_path, backbone, base, context_rate):
    """MobileNetV2 learns at 0.03 in every part (results/mobilenetv2_lr_12ep.md); every other backbone at 0.01
    with its context branch at 3x."""
    module = instantiate(compose_config("train", tmp_path, ["recipe=context", f"model.backbone={backbone}"]).model)
    lrs = {g["name"]: g.get("lr", module.hparams.lr) for g in module.param_groups()}
    assert module.hparams.lr == pytest.approx(base)
    assert lrs["face_encoder"] == lrs["fusion"] == lrs["classifier"] == pytest.approx(base)
    assert lrs["context_encoder"] == lrs["attention"] == pytest.approx(context_rate)


def test_face_only_mobilenetv2_trains_at_its_backbones_rate_and_table_7_at_the_tables(tmp_path):
    """The backbone's rate is the model's, whatever the recipe: face only, the baseline GLAMOR-Net is compared
    with, gets it too; experiment=table7_mobilenetv2 keeps the 0.01 its results were made with."""
    face = compose_config("train", tmp_path, ["experiment=table4_face", "model.backbone=mobilenetv2"])
    assert face.recipe.name == "plain" and face.model.lr == pytest.approx(0.03)
    assert compose_config("train", tmp_path, ["experiment=table7_mobilenetv2"]).model.lr == pytest.approx(0.01)


@pytest.mark.parametrize("backbone, epochs", [("original", 16), ("mobilenetv2", 12), ("resnet18", 12)])
def test_each_backbone_trains_for_its_own_budget_and_face_only_for_the_same(tmp_path, backbone, epochs):
    """The original backbone's context is read at 16 epochs, not at 12 (results/default_16ep.md); the face-only
    baseline of the same backbone gets the same budget, so `make train` commands compare like with like."""
    assert compose_config("train", tmp_path, [f"model.backbone={backbone}"]).trainer.max_epochs == epochs
    face = ["recipe=plain", "model.inputs=face", "model.attention=none", "model.fusion=none"]
    assert compose_config("train", tmp_path, [f"model.backbone={backbone}", *face]).trainer.max_epochs == epochs
    given = compose_config("train", tmp_path, [f"model.backbone={backbone}", "trainer.max_epochs=5"])
    assert given.trainer.max_epochs == 5


def test_a_learning_rate_on_the_command_line_wins_over_the_defaults(tmp_path):
    overrides = ["recipe=context", "model.backbone=mobilenetv2", "model.lr=0.05", "model.lr_scale={fusion: 2}"]
    cfg = compose_config("train", tmp_path, overrides)
    assert cfg.model.lr == 0.05 and dict(cfg.model.lr_scale) == {"fusion": 2}


def test_the_plain_recipe_is_the_papers_model_end_to_end(tmp_path):
    module = instantiate(compose_config("train", tmp_path, ["recipe=plain"]).model)
    assert not module.net.has_aux_heads and module.net.fusion.floor == 0.0
    assert all("lr" not in g for g in module.param_groups())


@pytest.mark.parametrize(
    "override, named",
    [("model.fusion=add", "model.fusion=add"), ("model.inputs=face", "model.inputs=face")],
)
def test_a_recipe_refuses_a_model_it_is_not_for_and_says_what_to_set(tmp_path, override, named):
    overrides = ["recipe=context", override]
    if override == "model.inputs=face":
        overrides += ["model.attention=none", "model.fusion=none"]
    cfg = compose_config("train", tmp_path, overrides)
    with pytest.raises(UserError) as err:
        check_recipe(cfg)
    message = str(err.value)
    assert "recipe=context" in message and named in message and "add recipe=plain" in message
    assert "model.inputs=both, model.fusion=fusion_net" in message


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_keeps_the_plain_recipe_whatever_the_default(tmp_path, name):
    """The paper's experiments and the tables' configs were measured with the plain recipe (results/*.md):
    they pin it, so their commands reproduce those figures; a command-line recipe still wins."""
    cfg = compose_config("train", tmp_path, [f"experiment={name}"])
    assert cfg.recipe.name == "plain"
    assert cfg.model == compose_config("train", tmp_path, [f"experiment={name}", "recipe=plain"]).model
    assert compose_config("train", tmp_path, [f"experiment={name}", "recipe=context"]).recipe.name == "context"


def test_a_run_with_the_context_recipe_trains_and_reports_its_branches(synth_root, tmp_path):
    cfg = compose_config(
        "train", tmp_path, ["recipe=context", f"data.root={synth_root}", *FAST, "trainer.fast_dev_run=true"]
    )
    metrics = train(cfg)
    assert {"train/loss", "val/acc", "val/acc_context", "val/acc_face", "val/w_face"} <= set(metrics)
    assert 0.4 - 1e-6 <= metrics["val/w_face"] <= 0.6 + 1e-6
