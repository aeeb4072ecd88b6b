"""Helper of the tests in this folder: a real Lightning checkpoint from a one-step fit on SynthCAER."""
from __future__ import annotations

from pathlib import Path

import lightning as L

from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.module import EmotionModule


def fit_checkpoint(root: Path, path: Path, data: dict | None = None, **hparams) -> Path:
    """Fit `EmotionModule(**hparams)` for one step on `root` (data module settings `data`), save it with the
    Trainer, return `path`."""
    L.seed_everything(0, workers=True)
    module = EmotionModule(**hparams)
    dm = EmotionDataModule(str(root), batch_size=8, cache_workers=0, **(data or {}))
    module.bind_data(dm)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(path)
    return path
