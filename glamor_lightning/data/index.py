"""The face index `ROOT/faces.csv`: one row per image, written atomically."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from glamor_lightning.data.classes import canonical_label

INDEX_NAME = "faces.csv"
COLUMNS = ("split", "path", "label", "x1", "y1", "x2", "y2", "score", "source")
SOURCES = ("mtcnn", "synthetic", "imported", "none")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FaceRow:
    """One image: where it is, its label, and its face box in original-image pixels (None = no face)."""

    split: str
    path: str  # relative to the data root, with forward slashes
    label: str  # canonical class name
    box: tuple[float, float, float, float] | None
    score: float | None = None
    source: str = "none"

    @property
    def has_face(self) -> bool:
        return self.box is not None


class FaceIndexError(ValueError):
    """A malformed faces.csv."""


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def row_to_record(row: FaceRow) -> list[str]:
    box = row.box if row.box is not None else (None,) * 4
    return [row.split, row.path, row.label, *(_fmt(b) for b in box), _fmt(row.score), row.source]


def record_to_row(rec: dict[str, str], where: str) -> FaceRow:
    """Parse one CSV record; errors name the file and line."""
    try:
        coords = [rec[k].strip() for k in ("x1", "y1", "x2", "y2")]
        box = None if all(c == "" for c in coords) else tuple(float(c) for c in coords)
        source = rec["source"].strip() or "none"
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
        if box is None and source != "none":
            raise ValueError(f"empty box with source {source!r}; a row with no face has source 'none'")
        score = rec["score"].strip()
        return FaceRow(
            split=rec["split"].strip(),
            path=rec["path"].strip(),
            label=canonical_label(rec["label"], where=where),
            box=box,  # type: ignore[arg-type]
            score=float(score) if score else None,
            source=source,
        )
    except (KeyError, ValueError, TypeError) as err:
        raise FaceIndexError(f"{where}: {err}") from None


def check_data_root(root: str | os.PathLike) -> Path:
    """`root` must be a folder with a faces.csv; the error says how to make one. Cheap: the entry points
    call it before their slow imports (`preflight`), the data module before it reads anything."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data root {str(root)!r} does not exist. Make the embedded SynthCAER data with "
            f"`glamor prepare synth {root}`, or point data.root (make ... DATA=) at a CAER-S-style root."
        )
    if not (root / INDEX_NAME).is_file():
        raise FileNotFoundError(
            f"{root / INDEX_NAME} is missing: run `glamor prepare detect {root}` (or `glamor prepare import`) "
            "to index the faces of this root."
        )
    return root


def read_index(path: str | os.PathLike) -> list[FaceRow]:
    """Read a faces.csv; a missing column or a bad value is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No face index at {path}: run `glamor prepare detect {path.parent}` "
            f"(or `glamor prepare import ...`) first."
        )
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise FaceIndexError(f"{path}: missing columns {sorted(missing)}; expected {','.join(COLUMNS)}")
        return [record_to_row(rec, f"{path}:{i + 2}") for i, rec in enumerate(reader)]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that readers see either the old or the whole new content, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_index(path: str | os.PathLike, rows: Iterable[FaceRow]) -> None:
    """Write faces.csv atomically (temp file + rename), rows in the given order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(row_to_record(row))
    atomic_write_text(path, buf.getvalue())
