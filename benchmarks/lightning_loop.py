"""Lightning's own cost: training steps through `Trainer.fit`, as `make train` runs them, against a bare loop
over the same loader and the same step, side by side.

`fit`: the training config composed as the entry point composes it (`conf/train.yaml` with `recipe=plain`, the model
the bare loop trains; every default callback:
checkpoints, step seeding, thread sizing, diagnostics, learning-rate monitor, progress bar; the CSV logger),
validation off, `max_steps` steps; a callback notes the time at every batch start and the figure is the images/s
between the end of the warm-up and the last batch start. `bare`: `full_training.LoaderFeed` (the data module's
training loader) into `TrainStep` (forward, loss, backward, SGD), the same number of steps. Both at the best
model-only setting of the backbone (precision, memory format), repeats alternated (bare, fit, bare, fit, ..., bare),
at the authors' batch (4) and at ours (32). `fit / bare` (each fit against the mean of the bare runs on either side
of it: `sandwiched_ratio`) below 1 is what Lightning's loop, logging and callbacks cost.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.common import Settings, TrainStep, log, make_module
from benchmarks.full_training import LoaderFeed, make_datamodule
from glamor_lightning.analysis.sweeps import compose_train_config

WARMUP = 3  #: steps not timed, in both loops


class BatchClock(Callback):
    """The time at the start of every training batch."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def fit_ips(root: Path, backbone: str, setting: dict, batch: int, steps: int, s: Settings) -> float:
    """Images/s of `steps` training steps through `Trainer.fit` with the default callbacks."""
    from hydra.utils import instantiate

    from glamor_lightning.hydra_utils import callbacks, loggers

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_train_config(
            [
                f"data.root={root}",
                f"model.backbone={backbone}",
                "recipe=plain",  # the model `bare_ips` trains (`make_module`): Lightning's cost, not a recipe's
                f"model.channels_last={setting['channels_last']}",
                f"trainer.precision={'32-true' if setting['precision'] == 'fp32' else setting['precision']}",
                f"trainer.accelerator={'gpu' if s.device.type == 'cuda' else 'cpu'}",
                f"data.batch_size={batch}",
                f"+trainer.max_steps={steps}",
                "+trainer.limit_val_batches=0",
                "logger=csv",
                f"seed={s.seed}",
                f"data.num_workers={s.full_workers}",
            ],
            Path(out),
        )
        L.seed_everything(s.seed)
        model, dm = instantiate(cfg.model), instantiate(cfg.data)
        model.bind_data(dm)
        clock = BatchClock()
        trainer = instantiate(cfg.trainer, callbacks=[*callbacks(cfg), clock], logger=loggers(cfg))
        trainer.fit(model, datamodule=dm)
    t = clock.starts
    return (len(t) - 1 - WARMUP) * batch / (t[-1] - t[WARMUP])


def bare_ips(root: Path, backbone: str, setting: dict, batch: int, steps: int, s: Settings) -> float:
    """Images/s of `steps` steps of the bare loop (loader → device → TrainStep)."""
    dm = make_datamodule(root, "cpu", dataclasses.replace(s, batch=batch))
    torch.manual_seed(s.seed)
    step = TrainStep(make_module(backbone, setting["channels_last"], s.device), setting["precision"], s.device)
    feed = LoaderFeed(dm, s.device)
    for _ in range(WARMUP):
        step(*feed.next()[:3])
    t0 = time.perf_counter()
    for _ in range(steps - 1 - WARMUP):  # the steps `fit_ips` times: from its warm-up end to its last batch start
        step(*feed.next()[:3])
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    return (steps - 1 - WARMUP) * batch / (time.perf_counter() - t0)


def fit_steps(batch: int) -> int:
    """Steps of a timed fit: about 480 images, at least 30 steps."""
    return max(30, 480 // batch)


def sandwiched_ratio(fits: list[float], bares: list[float]) -> float:
    """The median over fits of each fit's images/s over the mean of the bare runs just before and just after it
    (`bares` has one more run than `fits`: bare, fit, bare, fit, ..., bare). This machine's speed drifts by up to a
    third within a minute; a drift that is linear over a fit and its two neighbours cancels, where a fit compared
    with the one bare run after it takes the whole drift as Lightning's."""
    if len(bares) != len(fits) + 1:
        raise ValueError(f"each fit needs a bare run before and after it: {len(fits)} fits, {len(bares)} bare runs")
    return statistics.median(f / ((b0 + b1) / 2) for f, b0, b1 in zip(fits, bares, bares[1:]))


def run(root: Path, best: dict[str, dict], s: Settings, batches: tuple[int, ...] = (4, 32)) -> dict:
    """{backbone: {batch: {"fit": [img/s...], "bare": [one more], "fit_over_bare": `sandwiched_ratio`}}}."""
    out: dict = {}
    repeats = 1 if s.quick else 3
    for backbone in s.backbones:
        setting = best[backbone]
        out[backbone] = {}
        for batch in batches:
            steps = 8 if s.quick else fit_steps(batch)
            fits, bares = [], [bare_ips(root, backbone, setting, batch, steps, s)]
            for _ in range(repeats):
                fits.append(fit_ips(root, backbone, setting, batch, steps, s))
                bares.append(bare_ips(root, backbone, setting, batch, steps, s))
            ratio = sandwiched_ratio(fits, bares)
            out[backbone][str(batch)] = {"fit": fits, "bare": bares, "steps": steps, "fit_over_bare": ratio}
            log(
                f"lightning {backbone:12s} batch {batch:3d} ({setting['key']}): fit {statistics.median(fits):.1f}, "
                f"bare {statistics.median(bares):.1f} img/s, fit / bare {ratio:.3f}"
            )
    return out
