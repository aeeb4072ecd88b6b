"""Shared fixtures: a small real SynthCAER root and Hydra configs composed as the entry points do."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# trainer.precision=auto remembers its measurements here: never in the user's ~/.cache from a test
os.environ["GLAMOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="glamor-test-cache-")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from glamor_lightning.allocator import glibc  # noqa: E402
from glamor_lightning.data.synth import SynthConfig, generate  # noqa: E402
from glamor_lightning.hydra_utils import CONF_DIR  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: tests of malloc's settings (`glamor_lightning.allocator`), which are glibc's
linux_glibc = pytest.mark.skipif(glibc() is None, reason="malloc's settings are glibc's")

SMALL_SYNTH = SynthConfig(per_class_train=8, per_class_val=3, per_class_test=4, seed=7)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small SynthCAER root (7 classes × (8 train + 3 val + 4 test)), made once per session."""
    return generate(tmp_path_factory.mktemp("synth") / "synthcaer", SMALL_SYNTH, workers=0)


def make_datamodule(root: Path, **kw):
    """A set-up EmotionDataModule over `root`, its cache kept beside the root (not inside it)."""
    from glamor_lightning.data.datamodule import EmotionDataModule

    dm = EmotionDataModule(
        str(root), batch_size=4, cache_dir=str(root.parent / f"cache-{root.name}"), cache_workers=0, **kw
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def compose_config(name: str, out: Path, overrides: list[str] = ()) -> DictConfig:
    """Compose `conf/<name>.yaml` with overrides, with Hydra's runtime set as in a real run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(out / "logs")
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig().set_config(cfg)
    return cfg


def fit_checkpoint(root: Path, path: Path, data: dict | None = None, **hparams) -> Path:
    """A real checkpoint: `EmotionModule(**hparams)` fitted for one step on `root` (data module settings
    `data`), saved by the Trainer at `path`."""
    import lightning as L

    from glamor_lightning.data.datamodule import EmotionDataModule
    from glamor_lightning.module import EmotionModule

    L.seed_everything(0, workers=True)
    module = EmotionModule(**hparams)
    dm = EmotionDataModule(str(root), batch_size=8, cache_workers=0, **(data or {}))
    module.bind_data(dm)
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(synth_root, tmp_path_factory) -> Path:
    """A default GLAMOR-Net checkpoint after one training step on `synth_root`, made once per session."""
    return fit_checkpoint(synth_root, tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def cpu_trainer(**kwargs):
    """A quiet one-process CPU `L.Trainer` (no logger, bar or summary; the data module shards itself); `kwargs`
    add to or override those settings."""
    import lightning as L

    settings = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**settings, **kwargs})
