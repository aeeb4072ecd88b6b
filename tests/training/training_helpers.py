"""Shared by tests/training: fast overrides, a subprocess runner, metrics.csv reading, a self-kill callback, a run
resumed before and after an event."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from glamor_lightning.hydra_utils import callbacks

REPO = Path(__file__).resolve().parents[2]

#: a short, quiet run on the tiny SynthCAER root (7 × 8 train images: 7 steps of 8 per epoch)
FAST = [
    "model.backbone=original",
    "trainer.accelerator=cpu",
    "logger=csv",
    "data.cache_workers=0",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.precision=32-true",
    "model.lr_schedule=constant",
    "callbacks.thread_sizer.enabled=false",  # runs compared bit for bit keep their thread count
]
#: 3 epochs of 2 steps, one validation batch, deterministic: the runs `resumed_before_and_after` compares bit for bit
THREE_SHORT_EPOCHS = [
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
]
#: staged training, one epoch per stage: branches (epoch 0), fusion (1), joint (2)
ONE_EPOCH_STAGES = [
    "callbacks=staged",
    "callbacks.stages.stages.0.start=0",
    "callbacks.stages.stages.1.start=1",
    "callbacks.stages.stages.2.start=2",
]


def fit(cfg, extra_callbacks: list[Callback] = (), ckpt_path=None) -> L.Trainer:
    """`trainer.fit` as `glamor_lightning.train` does it, with extra callbacks (after the config's)."""
    L.seed_everything(cfg.seed, workers=True)
    trainer = instantiate(
        cfg.trainer, callbacks=[*callbacks(cfg), *extra_callbacks], logger=[instantiate(cfg.logger.csv)]
    )
    datamodule = instantiate(cfg.data)
    trainer.fit(instantiate(cfg.model), datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


class SaveCheckpoints(Callback):
    """Writes a checkpoint after training batch `(epoch, batch_idx)`, or at `(epoch, "end")` of an epoch: `save`
    maps those points to paths."""

    def __init__(self, save: dict) -> None:
        self.save = save

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) in self.save:
            trainer.save_checkpoint(self.save[(trainer.current_epoch, batch_idx)])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch, "end") in self.save:
            trainer.save_checkpoint(self.save[(trainer.current_epoch, "end")])


def resumed_before_and_after(tmp_path_factory, overrides: list[str], probe, before, after) -> SimpleNamespace:
    """Run A (`compose_config("train", ...)` with `overrides`) saves checkpoints at the points `before` and `after`
    (`SaveCheckpoints`' keys, either side of the event a test is about); B resumes the first, C the second. Each run
    gets its own `probe()` callback. Returns a, b, c (the probes), dirs (A, B, C) and after (C's checkpoint)."""
    from conftest import compose_config

    dirs = {k: tmp_path_factory.mktemp(k) for k in "ABC"}
    paths = {before: dirs["A"] / "before.ckpt", after: dirs["A"] / "after.ckpt"}
    a, b, c = probe(), probe(), probe()
    fit(compose_config("train", dirs["A"], overrides), [a, SaveCheckpoints(paths)])
    fit(compose_config("train", dirs["B"], overrides), [b], ckpt_path=paths[before])
    fit(compose_config("train", dirs["C"], overrides), [c], ckpt_path=paths[after])
    return SimpleNamespace(a=a, b=b, c=c, dirs=dirs, after=paths[after])


def start_module(module: str, overrides: list[str], out: Path, threads: int | None = None) -> subprocess.Popen:
    """Start `python -m module overrides hydra.run.dir=out` in a fresh process (tests/training importable),
    with `threads` CPU threads (default: this process's, for bit-equal CPU results)."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        NO_ALBUMENTATIONS_UPDATE="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(REPO)]),
        OMP_NUM_THREADS=str(threads or torch.get_num_threads()),
    )
    return subprocess.Popen(
        [sys.executable, "-m", module, *overrides, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Wait for a `start_module` process; with `check`, fail on a non-zero exit, showing its output."""
    stdout, stderr = proc.communicate(timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_module(
    module: str, overrides: list[str], out: Path, timeout: float = 300, check: bool = True, threads: int | None = None
) -> subprocess.CompletedProcess:
    """`start_module` and `finish`."""
    return finish(start_module(module, overrides, out, threads), timeout, check)


def read_metrics(out: Path) -> list[dict[str, float]]:
    """Rows of `out/csv/metrics.csv`, empty cells left out, values as floats."""
    with open(out / "csv" / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def epoch_rows(rows: list[dict[str, float]], key: str = "val/acc") -> dict[int, dict[str, float]]:
    """Per epoch, every epoch-level value logged (the rows that have `epoch` and no `step`-only keys)."""
    merged: dict[int, dict[str, float]] = {}
    for row in rows:
        if "epoch" in row and not any(k.endswith("_step") for k in row) and "test/acc" not in row:
            merged.setdefault(int(row["epoch"]), {}).update({k: v for k, v in row.items() if k != "step"})
    return merged


def is_finite(x: float) -> bool:
    return math.isfinite(x)


class KillAt(Callback):
    """SIGKILLs its own process before training step `step` (no clean-up, no checkpoint: a crash)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


#: a Python program that keeps one core busy for {s} seconds
BUSY = "import time\nt = time.time() + {s}\nwhile time.time() < t: pass"


def busy_elsewhere(n: int, seconds: float) -> list[int]:
    """Start `n` busy programs that are not this process's descendants (their parent shell exits at once), as
    another user's load would be; their pids."""
    # their output goes to /dev/null: holding the shell's stdout pipe, they would keep `run` waiting until they end
    script = " ".join(f"{sys.executable} -c '{BUSY.format(s=seconds)}' >/dev/null 2>&1 & echo $!;" for _ in range(n))
    return [
        int(pid)
        for pid in subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True).stdout.split()
    ]


def stop_programs(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
