"""Hydra entry point: test any checkpoint.  `python -m glamor_lightning.eval ckpt_path=PATH [overrides]`

The model comes from the checkpoint's own hyper-parameters; only the data and trainer come from config.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from glamor_lightning.checkpoints import load_module
from glamor_lightning.hydra_utils import CONF_DIR, callbacks, format_metrics, loggers

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint `cfg.ckpt_path` on `cfg.data`; return the test metrics."""
    if not cfg.get("ckpt_path"):
        raise ValueError("Pass the checkpoint to test: ckpt_path=/path/to/model.ckpt")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"Checkpoint {ckpt} does not exist")
    model = load_module(ckpt, map_location="cpu", eval_mode=False)  # weights only; clear errors
    datamodule = instantiate(cfg.data)
    if getattr(datamodule, "mask_face", False) is None:
        datamodule.mask_face = model.net.masks_face
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers(cfg), callbacks=callbacks(cfg))
    trainer.test(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print(f"\nCheckpoint: {ckpt}\nTest metrics:\n{format_metrics(metrics)}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
