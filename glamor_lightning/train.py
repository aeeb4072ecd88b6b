"""Hydra entry point: fit, then test the best checkpoint.  `python -m glamor_lightning.train [overrides]`"""
from __future__ import annotations

import logging

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from glamor_lightning.hydra_utils import CONF_DIR, callbacks, format_metrics, loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model described by `cfg`, then test the best checkpoint; return all metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    if getattr(datamodule, "mask_face", False) is None:
        datamodule.mask_face = model.net.masks_face
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks(cfg), logger=loggers(cfg))
    config = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
              for k, v in cfg.items() if k != "hydra"}
    for lg in trainer.loggers:
        lg.log_hyperparams({"config": config})

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test", True) and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint was saved: testing the current weights.")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.is_global_zero:
            print(f"\nBest checkpoint: {best or '(none)'}\nTest metrics of the best checkpoint:\n"
                  f"{format_metrics({k: v for k, v in metrics.items() if k.startswith('test/')})}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/acc_best"))


if __name__ == "__main__":
    main()
