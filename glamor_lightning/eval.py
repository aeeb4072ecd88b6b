"""Hydra entry point: test any checkpoint.  `python -m glamor_lightning.eval ckpt_path=PATH [overrides]`

The model comes from the checkpoint's own hyper-parameters, and the data from its data contract
(`data.contract`): the root it was trained on, its split settings, sizes and masking. `data.root=ROOT`
(`make eval DATA=ROOT`) tests on another root and says so in the log; loader settings (`data.eval_batch_size`,
`data.num_workers`, ...) apply as given; a size or masking other than the checkpoint's is refused.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from glamor_lightning.data.index import check_data_root
from glamor_lightning.hydra_utils import CONF_DIR, format_metrics
from glamor_lightning.preflight import check_checkpoint_path, report_user_errors

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint `cfg.ckpt_path` on the data it was trained on (or `cfg.data.root`); return the metrics."""
    ckpt_path = check_checkpoint_path(cfg.get("ckpt_path"))
    if cfg.data.get("root"):
        check_data_root(cfg.data.root)
    import lightning as L
    from hydra.utils import instantiate

    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
    from glamor_lightning.data.contract import datamodule_from_checkpoint
    from glamor_lightning.hydra_utils import callbacks, finish_loggers, loggers
    from glamor_lightning.precision_choice import AUTO, checkpoint_precision
    from glamor_lightning.quiet import quiet_third_party_notes

    ckpt = read_checkpoint(ckpt_path)  # weights only; clear errors
    model = module_from_checkpoint(ckpt, str(ckpt_path), eval_mode=False)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = datamodule_from_checkpoint(ckpt, model.data_contract, data, where=str(ckpt_path))
    log.info("testing %s on %s: %s", ckpt_path, datamodule.root, model.data_contract.describe())
    if cfg.trainer.get("precision") == AUTO:
        cfg.trainer.precision = checkpoint_precision(ckpt)
        log.info("trainer.precision=auto -> %s (the precision the checkpoint was trained in)", cfg.trainer.precision)
    quiet_third_party_notes()
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers(cfg), callbacks=callbacks(cfg))
    try:
        trainer.test(model, datamodule=datamodule)
    finally:
        finish_loggers(trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print(f"\nCheckpoint: {ckpt_path}\nData: {datamodule.root}\nTest metrics:\n{format_metrics(metrics)}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    report_user_errors("glamor eval", lambda: evaluate(cfg))


if __name__ == "__main__":
    main()
