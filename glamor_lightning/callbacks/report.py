"""Evaluation report: predictions file, per-class accuracy and confusion matrix of a test run.

Collects what `EmotionModule.test_step` returns (`row`, `target`, `pred`, `probs`), gathers it on rank 0
under DDP (every sample once: the test shards are not padded), and writes into `output_dir`:

- `predictions.csv` — `path,true,predicted,prob_<Class>...` in faces.csv order (`glamor compare` input);
- `per_class_accuracy.csv` — `class,samples,correct,accuracy`, then an `all` row;
- `confusion_matrix.csv` (counts, rows = true class) and `confusion_matrix.png` (row-normalised);

and, when a `WandbLogger` is among the trainer's loggers, logs them as `test/predictions` (table),
`test/per_class_accuracy` (table) and `test/confusion_matrix` (image).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def gather_to_rank_zero(obj: Any, trainer: L.Trainer) -> list[Any] | None:
    """Every rank's `obj` as a list on global rank 0 (None elsewhere); a one-element list without DDP."""
    import torch.distributed as dist

    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)  # works for gloo and nccl alike (gather_object needs extra care)
    return gathered if trainer.is_global_zero else None


class EvalReport(Callback):
    """Writes the evaluation report at the end of every `trainer.test` (see the module docstring).

    Args:
        output_dir: where the files go; None → the trainer's `default_root_dir`.
        log_wandb: also log to W&B when a WandbLogger is in use.
        max_wandb_rows: at most this many rows in the W&B predictions table (all rows go to the CSV).
    """

    def __init__(
        self, output_dir: str | os.PathLike | None = None, log_wandb: bool = True, max_wandb_rows: int = 10000
    ) -> None:
        self.output_dir = output_dir
        self.log_wandb = log_wandb
        self.max_wandb_rows = max_wandb_rows
        self._parts: list[dict[str, np.ndarray]] = []
        self.files: dict[str, Path] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        self._parts.append(
            {
                k: outputs[k].detach().float().cpu().numpy() if k == "probs" else outputs[k].detach().cpu().numpy()
                for k in ("row", "target", "pred", "probs")
            }
        )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        classes = list(getattr(pl_module, "class_names", None) or [])
        mine = _concat(self._parts, len(classes))
        self._parts = []
        gathered = gather_to_rank_zero(mine, trainer)
        if gathered is None:  # not rank 0
            return
        data = _concat(gathered, len(classes))
        if not len(data["row"]):
            log.warning("evaluation report: no test predictions were collected")
            return
        order = np.argsort(data["row"], kind="stable")
        data = {k: v[order] for k, v in data.items()}
        if not classes:
            classes = [str(i) for i in range(data["probs"].shape[1])]
        self.files = self.write(trainer, data, classes)
        if self.log_wandb:
            self._log_wandb(trainer, data, classes)

    # -- writing ----------------------------------------------------------------------------------
    def _out_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    @staticmethod
    def _paths(trainer: L.Trainer, rows: np.ndarray) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        dm_rows = getattr(dm, "rows", None)
        if dm_rows:
            return [dm_rows[int(r)].path for r in rows]
        return [f"row_{int(r)}" for r in rows]  # a data module without faces.csv rows

    def write(self, trainer: L.Trainer, data: dict[str, np.ndarray], classes: list[str]) -> dict[str, Path]:
        from glamor_lightning.analysis.plots import plot_confusion_matrix
        from glamor_lightning.analysis.predictions import confusion_matrix, per_class_accuracy, write_predictions

        out = self._out_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        true = [classes[int(t)] for t in data["target"]]
        pred = [classes[int(p)] for p in data["pred"]]
        files = {
            "predictions": write_predictions(
                out / "predictions.csv", self._paths(trainer, data["row"]), true, pred, data["probs"], classes
            )
        }
        per_class = per_class_accuracy(true, pred, classes)
        n, k = len(true), sum(t == p for t, p in zip(true, pred))
        files["per_class_accuracy"] = out / "per_class_accuracy.csv"
        with files["per_class_accuracy"].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "samples", "correct", "accuracy"])
            for r in per_class:
                w.writerow([r["class"], r["samples"], r["correct"], f"{r['accuracy']:.6f}"])
            w.writerow(["all", n, k, f"{k / n:.6f}"])
        counts = confusion_matrix(true, pred, classes)
        files["confusion_matrix_csv"] = out / "confusion_matrix.csv"
        with files["confusion_matrix_csv"].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["true\\predicted", *classes])
            for c, row in zip(classes, counts):
                w.writerow([c, *map(int, row)])
        files["confusion_matrix"] = plot_confusion_matrix(
            counts,
            classes,
            out / "confusion_matrix.png",
            title=f"Confusion matrix, row-normalised (n={n}, accuracy {k / n:.2%})",
        )
        log.info("evaluation report in %s: %s", out, ", ".join(p.name for p in files.values()))
        print(f"Evaluation report: {', '.join(str(p) for p in files.values())}")
        return files

    def _log_wandb(self, trainer: L.Trainer, data: dict[str, np.ndarray], classes: list[str]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        import wandb

        paths = self._paths(trainer, data["row"])
        limit = min(len(paths), self.max_wandb_rows)
        table = wandb.Table(columns=["path", "true", "predicted", *(f"prob_{c}" for c in classes)])
        for i in range(limit):
            table.add_data(
                paths[i], classes[int(data["target"][i])], classes[int(data["pred"][i])], *map(float, data["probs"][i])
            )
        per_class = wandb.Table(columns=["class", "samples", "correct", "accuracy"])
        with self.files["per_class_accuracy"].open(newline="") as fh:
            for rec in list(csv.reader(fh))[1:]:
                per_class.add_data(rec[0], int(rec[1]), int(rec[2]), float(rec[3]))
        for lg in wandb_loggers:
            lg.experiment.log(
                {
                    "test/predictions": table,
                    "test/per_class_accuracy": per_class,
                    "test/confusion_matrix": wandb.Image(str(self.files["confusion_matrix"])),
                }
            )


def _concat(parts: list[dict[str, np.ndarray]], num_classes: int) -> dict[str, np.ndarray]:
    if not parts:
        return {
            "row": np.zeros(0, np.int64),
            "target": np.zeros(0, np.int64),
            "pred": np.zeros(0, np.int64),
            "probs": np.zeros((0, num_classes), np.float32),
        }
    return {k: np.concatenate([p[k] for p in parts]) for k in ("row", "target", "pred", "probs")}
