"""One fact per default: the model config (`conf/model/glamor.yaml`, composed as `train` composes it) holds
every hyper-parameter of `EmotionModule` with the signature's default, so code that builds the module
directly (tests, notebooks, `load_module`) and a training run agree. The training recipe (`recipe=`, conf/recipe/)
sets some of them on top: `recipe=plain` sets none, and is what this compares."""

from __future__ import annotations

import inspect

from omegaconf import OmegaConf

from conftest import compose_config
from glamor_lightning.module import EmotionModule

#: hyper-parameters the config leaves out on purpose
NOT_IN_CONFIG = {"class_names": "the data's classes, which the run takes from the data root"}


def test_model_config_defaults_are_the_module_defaults(tmp_path):
    model = OmegaConf.to_container(compose_config("train", tmp_path, ["recipe=plain"]).model, resolve=True)
    assert model.pop("_target_") == "glamor_lightning.module.EmotionModule"
    signature = {name: p.default for name, p in inspect.signature(EmotionModule).parameters.items()}
    assert set(model) == set(signature) - set(NOT_IN_CONFIG)
    drift = {
        k: (v, signature[k])
        for k, v in model.items()
        if v != (list(signature[k]) if isinstance(signature[k], tuple) else signature[k])
    }
    assert not drift, f"config value vs EmotionModule default: {drift}"
