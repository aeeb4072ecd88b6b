"""Attention maps over the context image, as the paper's Figure 9.

The model's attention map has one cell per cell of the context encoder's last feature map (7×7 for the
original encoder on a 112×112 crop); its weights sum to 1. An overlay upsamples it (bicubic) to the crop
and blends the `jet` colour map over the masked context crop on a **fixed** scale: a cell's weight, log
scale, from 0.001 (blue) to 1 (red), so that one figure can be read against another (a uniform 7×7 map,
1/49 ≈ 0.02 per cell, is cyan; a cell holding half of the attention is orange). The figures carry that
colour bar. A (near-)uniform map — largest cell under `UNIFORM_RATIO` times the smallest, as with
`attention='none'` (average pooling) or a face-only model (one cell of weight 1) — is named as such in
the figure's title and in the records.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

#: the overlays' fixed colour scale: a cell's attention weight, log scale, from SCALE_MIN (blue) to SCALE_MAX (red)
SCALE_MIN, SCALE_MAX = 1e-3, 1.0
#: a map whose largest cell is under this many times its smallest is called (near-)uniform
UNIFORM_RATIO = 1.05
COLOUR_MAP = "jet"


def upsample(attention: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """[h, w] attention → [H, W] float: the cells' weights interpolated (bicubic) to pixels, not rescaled
    (negative overshoot clipped to 0)."""
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"attention map must be 2-D [h, w], got shape {a.shape}")
    big = cv2.resize(
        a, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC if min(a.shape) > 1 else cv2.INTER_NEAREST
    )
    return np.clip(big, 0.0, None)


def scale_position(weights: np.ndarray) -> np.ndarray:
    """Where attention weights sit on the fixed colour scale: 0 at SCALE_MIN (and below), 1 at SCALE_MAX,
    log-linear in between."""
    low, high = math.log10(SCALE_MIN), math.log10(SCALE_MAX)
    w = np.clip(np.asarray(weights, dtype=np.float64), SCALE_MIN, SCALE_MAX)
    return (np.log10(w) - low) / (high - low)


def is_uniform(attention: np.ndarray, ratio: float = UNIFORM_RATIO) -> bool:
    """Whether the map singles out no region: its largest cell is at most `ratio` times its smallest
    (a one-cell map is uniform)."""
    a = np.asarray(attention, dtype=np.float64)
    return bool(a.size <= 1 or a.max() <= ratio * a.min())


def attention_note(attention: np.ndarray) -> str:
    """For a title: `uniform attention (…)` when the map is (near-)uniform, else empty."""
    if not is_uniform(attention):
        return ""
    return f"uniform attention (every cell ≈ {float(np.mean(attention)):.3f}): no region singled out"


def figure_title(title: str, attention: np.ndarray) -> str:
    """`title`, followed by the uniform-map note when there is one."""
    return "; ".join(part for part in (title, attention_note(attention)) if part)


def overlay_title(attention: np.ndarray) -> str:
    """The overlay panel's title: its largest cell weight, or that it is uniform."""
    return "attention: uniform" if is_uniform(attention) else f"attention (peak {float(np.max(attention)):.2f})"


def colorize(heat: np.ndarray, cmap: str = COLOUR_MAP) -> np.ndarray:
    """[H, W] values in [0, 1] → HxWx3 uint8 RGB through a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(heat, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, attention: np.ndarray, alpha: float = 0.5, cmap: str = COLOUR_MAP) -> np.ndarray:
    """The attention map coloured on the fixed scale (`scale_position`), upsampled to the image and
    blended over an HxWx3 uint8 image; same size out. The cells' scale positions are what is upsampled:
    bicubic ringing of the weights themselves would dip to near 0 next to a peak, dark blue on a log scale."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    heat = colorize(np.clip(upsample(scale_position(attention), image.shape[:2]), 0.0, 1.0), cmap)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass
class AttentionResult:
    """A batch through the model: class probabilities [B, C] and attention maps [B, h, w]."""

    probs: np.ndarray
    attention: np.ndarray


@torch.no_grad()
def run_model(module, faces: torch.Tensor, contexts: torch.Tensor) -> AttentionResult:
    """Run an `EmotionModule` on uint8 NHWC batches (any device the module is on), in eval mode."""
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    try:
        out = module(faces.to(device), contexts.to(device))
    finally:
        module.train(was_training)
    return AttentionResult(out.logits.float().softmax(1).cpu().numpy(), out.attention.float().cpu().numpy())


def draw_box(image: np.ndarray, box: Sequence[float] | None, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """A copy of the image with a rectangle (x1, y1, x2, y2) drawn; None draws nothing."""
    out = np.ascontiguousarray(image).copy()
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
    return out


def save_attention_panels(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    suptitle: str | None = None,
    rows: int = 1,
    dpi: int = 100,
    panel_inches: float = 2.2,
) -> Path:
    """Images (HxWx3 uint8) side by side (row-major in `rows` rows) with titles, and the colour bar of the
    overlays' fixed scale (attention weight per cell, `SCALE_MIN` to `SCALE_MAX`, log), as one PNG."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    cols = int(np.ceil(len(panels) / rows))
    fig = Figure(figsize=(panel_inches * cols + 0.9, panel_inches * rows + 0.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, panels, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    bar = fig.colorbar(
        ScalarMappable(LogNorm(SCALE_MIN, SCALE_MAX), COLOUR_MAP), ax=list(axes.flat), shrink=0.9, pad=0.02, aspect=25
    )
    bar.set_label("attention weight per cell", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_triplet(
    out_dir: str | os.PathLike,
    name: str,
    original: np.ndarray,
    context_crop: np.ndarray,
    attention: np.ndarray,
    title: str = "",
    alpha: float = 0.5,
) -> dict[str, Path]:
    """Write `<name>_original.png` (as given), `<name>_context.png` (the masked crop the model saw),
    `<name>_attention.png` (overlay on that crop, same size) and `<name>.png` (the three as panels, with
    the colour bar, titled `figure_title(title, attention)`: a uniform map says so)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    over = overlay(context_crop, attention, alpha=alpha)
    files = {
        "original": out_dir / f"{name}_original.png",
        "context": out_dir / f"{name}_context.png",
        "attention": out_dir / f"{name}_attention.png",
        "panels": out_dir / f"{name}.png",
    }
    for key, image in (("original", original), ("context", context_crop), ("attention", over)):
        if not cv2.imwrite(str(files[key]), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
            raise RuntimeError(f"could not write {files[key]}")
    save_attention_panels(
        [original, context_crop, over],
        ["original", "masked context", overlay_title(attention)],
        files["panels"],
        suptitle=figure_title(title, attention) or None,
    )
    return files


def pick_samples(labels: Sequence[int], n: int) -> list[int]:
    """Up to n positions, taken round-robin over the classes (each class in its original order), so that
    every class shows; deterministic."""
    labels = np.asarray(labels)
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(n, len(labels)):
        for positions in by_class:
            if positions and len(picked) < n:
                picked.append(int(positions.pop(0)))
    return sorted(picked)


def dataset_batch(dataset, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(faces, contexts, labels, rows) of dataset items `positions` (uint8 NHWC, as the loaders give)."""
    items = [dataset[int(i)] for i in positions]
    faces = torch.stack([it[0] for it in items])
    contexts = torch.stack([it[1] for it in items])
    return faces, contexts, np.array([it[2] for it in items]), np.array([it[3] for it in items])


def write_attention_figures(
    module, datamodule, split: str, n: int, out_dir: str | os.PathLike, batch_size: int = 32
) -> list[dict]:
    """Figures for n ≥ 1 samples of a set-up data module's `split`: per sample, `write_triplet` files named
    `<k>_<true>_<image stem>`, plus `attention_grid.png` (every sample's panels, one colour bar) and
    `attention.csv` (path, true, predicted, probability, uniform, figure)."""
    import csv

    from glamor_lightning.data.images import read_rgb

    if n < 1:
        raise ValueError(f"the number of attention figures must be at least 1, got {n}")
    if split not in datamodule.indices:
        raise ValueError(f"split {split!r} is not in the data module; it has {', '.join(datamodule.indices)}")
    dataset = datamodule.dataset(split)
    if not len(dataset):
        raise ValueError(f"the {split} split of {datamodule.root} is empty")
    positions = pick_samples(dataset.labels, n)
    classes = list(module.class_names)
    out_dir = Path(out_dir)
    records, grid, titles = [], [], []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        faces, contexts, labels, rows = dataset_batch(dataset, chunk)
        result = run_model(module, faces, contexts)
        for j in range(len(chunk)):
            row = datamodule.rows[int(rows[j])]
            k = len(records)
            pred = int(result.probs[j].argmax())
            name = f"{k:02d}_{row.label}_{Path(row.path).stem}"
            try:
                original = draw_box(read_rgb(datamodule.root / row.path), row.box)
            except ValueError:  # the image went away since the cache was made
                original = np.zeros((8, 8, 3), np.uint8)
            ctx = contexts[j].numpy()
            title = f"true {row.label}, predicted {classes[pred]} ({result.probs[j, pred]:.2f})"
            files = write_triplet(out_dir, name, original, ctx, result.attention[j], title=title)
            records.append(
                {
                    "path": row.path,
                    "true": row.label,
                    "predicted": classes[pred],
                    "probability": float(result.probs[j, pred]),
                    "uniform": is_uniform(result.attention[j]),
                    "figure": files["panels"].name,
                }
            )
            grid += [original, ctx, overlay(ctx, result.attention[j])]
            titles += [
                f"{row.label} → {classes[pred]} {result.probs[j, pred]:.2f}",
                "masked context",
                overlay_title(result.attention[j]),
            ]
    per_row = 2 if len(records) > 1 else 1
    rows_n = int(np.ceil(len(records) / per_row))
    pad = rows_n * per_row - len(records)
    blank = np.full((8, 8, 3), 255, np.uint8)
    save_attention_panels(
        grid + [blank] * (3 * pad),
        titles + [""] * (3 * pad),
        out_dir / "attention_grid.png",
        rows=rows_n,
        panel_inches=1.5,
        dpi=80,
    )
    with (out_dir / "attention.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return records
