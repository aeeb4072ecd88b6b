"""Fixtures of the prediction tests: one real checkpoint for the whole session."""
from __future__ import annotations

import lightning as L
import pytest

from glamor_lightning.data.datamodule import EmotionDataModule
from glamor_lightning.module import EmotionModule


@pytest.fixture(scope="session")
def ckpt(synth_root, tmp_path_factory):
    """A real checkpoint: one training step on SynthCAER, saved by the Trainer."""
    L.seed_everything(0)
    module = EmotionModule()
    dm = EmotionDataModule(str(synth_root), batch_size=8, cache_workers=0)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path
