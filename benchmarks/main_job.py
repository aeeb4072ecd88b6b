"""The main job's own clock: `make train BACKBONE=...` as a user runs it, timed epoch by epoch.

It runs the entry point's own `train()` on the train config composed as `python -m glamor_lightning.train`
composes it (the default recipe, `trainer.precision=auto`, every default callback, validation every epoch, the
CSV logger), on the data `make train` reads (`common.main_job_root`: the repository's SynthCAER, made in a temp
dir when absent; `--data` or a quick run's small root are said to be other data), for `EPOCHS` epochs instead of
the default's, with one callback added through the config: `EpochClock`, which notes when the first training
batch starts and when each validation ends. It reports the setup (imports aside: instantiation, the precision
choice, the data cache, up to the first batch), each epoch's wall time (training and validation) and the
projection `setup + max_epochs x last epoch` for the default `max_epochs` (the first epoch pays warm-up). The
test of the best checkpoint is left out (about one validation's time). Timing the job itself (`time make train
BACKBONE=mobilenetv2`) is the check of a projection.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from benchmarks.common import Settings, log
from glamor_lightning.analysis.sweeps import compose_train_config

EPOCHS = 2  #: epochs timed per backbone (the projection uses the last)


class EpochClock(Callback):
    """Writes to `out` (JSON) the `time.perf_counter()` of the first training batch's start and of each
    validation's end, and how many images an epoch trains on."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.times: dict = {"first_batch": None, "epoch_ends": [], "train_images": None}

    def on_train_start(self, trainer, pl_module) -> None:
        self.times["train_images"] = len(trainer.train_dataloader.dataset)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.times["first_batch"] is None:
            self.times["first_batch"] = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.times["epoch_ends"].append(time.perf_counter())
            self.out.write_text(json.dumps(self.times))


def time_job(root: Path, backbone: str, s: Settings, epochs: int = EPOCHS, overrides: Sequence[str] = ()) -> dict:
    """{"setup_s", "epoch_s": [...], "max_epochs", "projected_s", "precision", "recipe", "train_images"} of `make train
    BACKBONE=backbone` on `root` (with Hydra `overrides`, e.g. `recipe=plain`, to time another setting)."""
    from glamor_lightning.train import train

    with tempfile.TemporaryDirectory() as out:
        clock_file = Path(out) / "clock.json"
        cfg = compose_train_config(
            [
                f"data.root={root}",
                f"model.backbone={backbone}",
                "test=false",
                "logger=csv",
                "callbacks.rich_progress_bar=null",
                f"seed={s.seed}",
                f"paths.output_dir={out}",
                f"+callbacks.epoch_clock._target_={__name__}.EpochClock",
                f"+callbacks.epoch_clock.out={clock_file}",
                *overrides,
            ],
            Path(out),
        )
        max_epochs = int(cfg.trainer.max_epochs)  # the job's own (what the projection is for), then the bench's
        cfg.trainer.max_epochs = epochs
        started = time.perf_counter()
        train(cfg)
        times = json.loads(clock_file.read_text())
    starts = [times["first_batch"], *times["epoch_ends"][:-1]]
    epoch_s = [end - start for start, end in zip(starts, times["epoch_ends"])]
    setup_s = times["first_batch"] - started
    result = {
        "setup_s": setup_s,
        "epoch_s": epoch_s,
        "max_epochs": max_epochs,
        "projected_s": setup_s + max_epochs * epoch_s[-1],
        "precision": str(cfg.trainer.precision),  # what `auto` chose: train() writes it back
        "recipe": str(cfg.recipe.name),
        "train_images": times["train_images"],
    }
    log(
        f"main job {backbone:12s} ({result['recipe']} recipe, {result['precision']}): setup {setup_s:.0f} s, "
        f"epochs {', '.join(f'{e:.1f}' for e in epoch_s)} s; {max_epochs} epochs: {result['projected_s'] / 60:.1f} min"
    )
    return result


#: the README's main job (`make train BACKBONE=mobilenetv2`) and the model's default backbone
JOBS = ("mobilenetv2", "original")


def run(root: Path, s: Settings, as_make_train: bool) -> dict:
    """{backbone: time_job(...) and "as_make_train"} for each of `JOBS` among the bench's backbones (`--backbones`);
    `as_make_train`: whether `root` is the data `make train` reads (`common.main_job_root`), so that the table can
    say when a projection is not the main job's."""
    return {
        b: {**time_job(root, b, s, epochs=1 if s.quick else EPOCHS), "as_make_train": as_make_train}
        for b in JOBS
        if b in s.backbones
    }
