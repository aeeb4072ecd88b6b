"""The predictions file that `eval` writes and `glamor compare` reads.

`predictions.csv`: one row per test sample, `path,true,predicted,prob_<Class>...` — path relative to the
data root, class names canonical, one probability column per class in the model's class order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROB_PREFIX = "prob_"
BASE_COLUMNS = ("path", "true", "predicted")


class PredictionsFileError(ValueError):
    """A malformed predictions file; the message names the file (and line)."""


@dataclass
class Predictions:
    """The content of one predictions file."""

    paths: list[str]
    true: list[str]
    predicted: list[str]
    probs: np.ndarray  #: [N, C] float
    classes: tuple[str, ...]  #: the probability columns' classes, in file order
    source: str = ""  #: the file it came from

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def correct(self) -> np.ndarray:
        return np.array([t == p for t, p in zip(self.true, self.predicted)], dtype=bool)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self) else float("nan")


def write_predictions(
    path: str | os.PathLike,
    paths: Sequence[str],
    true: Sequence[str],
    predicted: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
) -> Path:
    """Write a predictions file atomically (temp file + rename); probabilities with 6 decimals."""
    path = Path(path)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(paths)
    if not (len(true) == len(predicted) == n and probs.shape == (n, len(classes))):
        raise ValueError(
            f"predictions: {n} paths, {len(true)} labels, {len(predicted)} predictions and "
            f"probabilities of shape {probs.shape} for {len(classes)} classes do not agree"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*BASE_COLUMNS, *(PROB_PREFIX + c for c in classes)])
        for i in range(n):
            writer.writerow([paths[i], true[i], predicted[i], *(f"{p:.6f}" for p in probs[i])])
    os.replace(tmp, path)
    return path


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read a predictions file; a missing column, a bad number or a repeated path is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No predictions file at {path}")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise PredictionsFileError(f"{path}: empty file")
        header = [h.strip() for h in header]
        missing = [c for c in BASE_COLUMNS if c not in header]
        if missing:
            raise PredictionsFileError(
                f"{path}: missing column(s) {', '.join(missing)}; a predictions file "
                f"has {', '.join(BASE_COLUMNS)}, {PROB_PREFIX}<Class>..."
            )
        col = {name: i for i, name in enumerate(header)}
        prob_cols = [h for h in header if h.startswith(PROB_PREFIX)]
        classes = tuple(h[len(PROB_PREFIX) :] for h in prob_cols)
        paths, true, predicted, probs = [], [], [], []
        seen: dict[str, int] = {}
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rec) != len(header):
                raise PredictionsFileError(f"{path}:{line}: {len(rec)} fields, expected {len(header)}")
            p = rec[col["path"]]
            if p in seen:
                raise PredictionsFileError(f"{path}:{line}: path {p!r} repeats line {seen[p]}")
            seen[p] = line
            paths.append(p)
            true.append(rec[col["true"]].strip())
            predicted.append(rec[col["predicted"]].strip())
            try:
                probs.append([float(rec[col[c]]) for c in prob_cols])
            except ValueError as err:
                raise PredictionsFileError(f"{path}:{line}: {err}") from None
    arr = np.asarray(probs, dtype=np.float64).reshape(len(paths), len(classes))
    return Predictions(paths, true, predicted, arr, classes, source=str(path))


def per_class_accuracy(
    true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> list[dict[str, object]]:
    """Per class: samples, correct, accuracy (NaN for a class with no sample)."""
    true_a, pred_a = np.asarray(true), np.asarray(predicted)
    rows = []
    for c in classes:
        mask = true_a == c
        n, k = int(mask.sum()), int((pred_a[mask] == c).sum())
        rows.append({"class": c, "samples": n, "correct": k, "accuracy": k / n if n else float("nan")})
    return rows


def confusion_matrix(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted):
        cm[index[t], index[p]] += 1
    return cm
