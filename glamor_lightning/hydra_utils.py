"""Small helpers the Hydra entry points share: instantiation of lists and a run summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.utils import instantiate
from omegaconf import DictConfig

if TYPE_CHECKING:  # the entry points import this before torch and Lightning (see `preflight`)
    import lightning as L
    from lightning import Callback
    from lightning.pytorch.loggers import Logger

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every entry with a `_target_` of a config group (callbacks, loggers)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def callbacks(cfg: DictConfig) -> list[Callback]:
    return instantiate_group(cfg.get("callbacks"))


def loggers(cfg: DictConfig) -> list[Logger]:
    return instantiate_group(cfg.get("logger"))


def finish_loggers(trainer: L.Trainer) -> None:
    """End the W&B run of each WandbLogger: the jobs of an in-process Hydra multirun share one Python
    process, and without `finish()` the next job would log into this job's run."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def format_metrics(metrics: dict) -> str:
    """`name = value` lines, test/acc first."""
    keys = sorted(metrics, key=lambda k: (k != "test/acc", k))
    return "\n".join(f"  {k:<22} {float(metrics[k]):.4f}" for k in keys)
