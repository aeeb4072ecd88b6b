"""Figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # a no-op when a non-interactive backend is already in use
    import matplotlib.pyplot as plt

    return plt


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row with no sample stays 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


def plot_confusion_matrix(
    counts: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix (rows: true class, normalised)",
    dpi: int = 100,
) -> Path:
    """A row-normalised confusion matrix (as the paper's Figure 7), each cell with its fraction."""
    plt = _pyplot()
    norm = row_normalise(counts)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k), dpi=dpi)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (folders made as needed) and free it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
