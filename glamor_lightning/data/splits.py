"""Which index rows are train, val and test, including a seeded stratified val split from train."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glamor_lightning.data.classes import canonical_label
from glamor_lightning.data.index import FaceRow
from glamor_lightning.data.layout import EXPECTED_LAYOUT, SPLIT_FOLDERS

log = logging.getLogger(__name__)
VAL_SOURCES = ("auto", "val", "train", "test")
#: the splits each Lightning stage reads
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


def check_folders(rows: Sequence[FaceRow], where: str) -> None:
    """The rows of faces.csv `where` (in file order, as `read_index` returns them) must be usable.

    There must be rows, and each row's path `<split>/<Class>/...` must agree with its split and label
    columns: the split folder is the row's split as `layout.scan_root` reads it (`val` or `validation`,
    any letter case) and the class folder names the row's class. Otherwise a test image with
    `split=train`, say, would be trained on. Errors name the file and line.
    """
    if not rows:
        raise ValueError(
            f"{where} has no rows, so there is nothing to train or test on: {EXPECTED_LAYOUT}, "
            f"indexed by `glamor prepare detect {Path(where).parent}` (`glamor prepare scan` shows "
            f"what a root holds)."
        )
    for line, row in enumerate(rows, start=2):
        at, parts = f"{where}:{line}", row.path.split("/")
        if len(parts) < 3:
            raise ValueError(f"{at}: path {row.path!r} is not <split>/<Class>/<file>")
        folder_split = SPLIT_FOLDERS.get(parts[0].lower())
        if folder_split != row.split:
            raise ValueError(
                f"{at}: {row.path} has split column {row.split!r} but is in folder {parts[0]!r} "
                f"({f'the {folder_split} split' if folder_split else 'not a split folder'}); an "
                f"image's split is its folder: fix the row, or run `glamor prepare detect "
                f"{Path(where).parent}`, which redoes such rows."
            )
        folder = canonical_label(parts[1], where=f"{at}: {'/'.join(parts[:2])}")
        if folder != row.label:
            raise ValueError(f"{at}: {row.path} is in folder {parts[1]!r} but labelled {row.label!r}")


def stratified_fraction(labels: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Positions of a seeded, per-class `fraction` of `labels` (at least one per class with ≥2 rows)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for name in sorted(set(labels.tolist())):
        pos = np.flatnonzero(labels == name)
        k = int(round(fraction * len(pos)))
        if k == 0 and len(pos) >= 2 and fraction > 0:
            k = 1
        picked.append(rng.permutation(pos)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def split_indices(
    rows: Sequence[FaceRow], val_from: str = "auto", val_fraction: float = 0.1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Row positions per stage. `val_from`: auto (val/ if present, else a fraction of train),
    val, train (seeded stratified fraction), or test (the common published CAER-S protocol)."""
    if val_from not in VAL_SOURCES:
        raise ValueError(f"val_from={val_from!r}; expected one of {VAL_SOURCES}")
    by_split = {
        s: np.array([i for i, r in enumerate(rows) if r.split == s], dtype=np.int64) for s in ("train", "val", "test")
    }
    unknown = sorted({r.split for r in rows} - set(by_split))
    if unknown:
        raise ValueError(f"faces.csv names unknown split(s) {unknown}; expected train, val, test")
    if val_from == "auto":
        val_from = "val" if len(by_split["val"]) else "train"
    train, val = by_split["train"], by_split["val"]
    if val_from == "train":
        held = stratified_fraction([rows[i].label for i in train], val_fraction, seed)
        val, train = train[held], np.delete(train, held)
        log.info("val = a seeded stratified %.0f%% of train (%d images)", 100 * val_fraction, len(val))
    elif val_from == "test":
        val = by_split["test"]
        log.warning(
            "val = the test split (the common published CAER-S protocol): val/acc_best is then selected on test data"
        )
    elif not len(val):
        raise ValueError("val_from='val' but faces.csv has no val rows")
    return {"train": train, "val": val, "test": by_split["test"]}


def check_stage_splits(
    indices: dict[str, np.ndarray], stage: str | None, where: str, notes: Sequence[str] = ()
) -> None:
    """The splits that `stage` reads (`STAGE_SPLITS`) must hold images, else an error naming `where`, the
    usable images per split and `notes` (why rows were left out), so that no run trains or tests on nothing."""
    empty = [s for s in STAGE_SPLITS.get(stage or "", ()) if not len(indices.get(s, ()))]
    if not empty:
        return
    counts = ", ".join(f"{s} {len(indices.get(s, ()))}" for s in ("train", "val", "test"))
    raise ValueError(
        f"{where} gives {' and '.join(f'no {s} images' for s in empty)}, which stage {stage!r} "
        f"needs (usable images: {counts}{''.join(f'; {n}' for n in notes)}): {EXPECTED_LAYOUT}, "
        f"indexed by `glamor prepare detect {Path(where).parent}`."
    )
