"""The training progress bar (`callbacks.rich_progress_bar`, `ThrottledRichProgressBar`): at most one update per
`min_interval_s` during training, always the first batch and each epoch's last, so the bar shows at once and ends
each epoch on its true figures."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, cpu_trainer, make_datamodule
from glamor_lightning.callbacks.progress import ThrottledRichProgressBar
from glamor_lightning.module import EmotionModule


def _fit(synth_root, bar: ThrottledRichProgressBar) -> int:
    """Two epochs of the tiny SynthCAER (14 steps of 4 each) with `bar`; the training batches run."""
    torch.manual_seed(0)
    module = EmotionModule(channels_last=False)
    dm = make_datamodule(synth_root)
    module.bind_data(dm)
    trainer = cpu_trainer(
        enable_progress_bar=True, enable_checkpointing=False, max_epochs=2, limit_val_batches=0, callbacks=[bar]
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.num_training_batches == 14
    return 2 * trainer.num_training_batches


def test_a_long_interval_updates_the_bar_at_each_epochs_last_batch_only(synth_root):
    bar = ThrottledRichProgressBar(min_interval_s=3600.0)
    _fit(synth_root, bar)
    assert bar.train_updates == 1 + 2  # the first batch (the bar appears), then each epoch's last
    # the last update moved the bar to the epoch's end: what a person reads when the epoch is over
    assert bar.train_progress_bar.completed == bar.total_train_batches == 14


def test_no_interval_updates_the_bar_at_every_batch(synth_root):
    bar = ThrottledRichProgressBar(min_interval_s=0.0)
    assert bar.train_updates == 0
    batches = _fit(synth_root, bar)
    assert bar.train_updates == batches


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError, match="min_interval_s must be 0 or more"):
        ThrottledRichProgressBar(min_interval_s=-1)


def test_the_default_config_trains_with_the_throttled_bar(tmp_path):
    cfg = compose_config("train", tmp_path)
    bar = instantiate(cfg.callbacks.rich_progress_bar)
    assert isinstance(bar, ThrottledRichProgressBar) and bar.min_interval_s == 0.1
