"""Which index rows are train, val and test, including a seeded stratified val split from train."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from glamor_lightning.data.classes import canonical_label
from glamor_lightning.data.index import FaceRow

log = logging.getLogger(__name__)
VAL_SOURCES = ("auto", "val", "train", "test")


def check_folders(rows: Sequence[FaceRow], where: str) -> None:
    """Each row's class folder (`split/<Class>/...`) must name a class and agree with its label."""
    for row in rows:
        parts = row.path.split("/")
        if len(parts) < 3:
            raise ValueError(f"{where}: path {row.path!r} is not <split>/<Class>/<file>")
        folder = canonical_label(parts[1], where=f"{where}: {'/'.join(parts[:2])}")
        if folder != row.label:
            raise ValueError(f"{where}: {row.path} is in folder {parts[1]!r} but labelled {row.label!r}")


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


def split_indices(rows: Sequence[FaceRow], val_from: str = "auto", val_fraction: float = 0.1,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Row positions per stage. `val_from`: auto (val/ if present, else a fraction of train),
    val, train (seeded stratified fraction), or test (the common published CAER-S protocol)."""
    if val_from not in VAL_SOURCES:
        raise ValueError(f"val_from={val_from!r}; expected one of {VAL_SOURCES}")
    by_split = {s: np.array([i for i, r in enumerate(rows) if r.split == s], dtype=np.int64)
                for s in ("train", "val", "test")}
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
        log.warning("val = the test split (the common published CAER-S protocol): val/acc_best "
                    "is then selected on test data")
    elif not len(val):
        raise ValueError("val_from='val' but faces.csv has no val rows")
    return {"train": train, "val": val, "test": by_split["test"]}
