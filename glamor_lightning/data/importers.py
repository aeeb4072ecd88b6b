"""`glamor prepare import`: face boxes that users already have, turned into `ROOT/faces.csv`.

Two formats:
- `glamor-txt`: the authors' tree of per-image text files, `DIR/<split>/<Class>/<name>.txt` holding
  `x1,y1,x2,y2` for `ROOT/<split>/<Class>/<name>.<ext>`; `0,0,0,0` means no face.
- `csv`: lines `relpath,label,x1,y1,x2,y2` (the public CAER-S annotation sets, e.g. `train.txt`),
  `relpath` relative to the root, `label` a class name or its index in the canonical order
  (0 = Anger ... 6 = Surprise); an optional header line is skipped.

Paths are matched with `Angry` and `Anger` taken as the same folder. A box file or line that names no
image of the root, disagrees with the image's class folder, cannot be parsed, or has an empty box is a
problem: it is reported (file and line named) and gives no row. Inverted corners are put in order;
coordinates outside the image are kept (crops clip them). The imported rows (`source=imported`, or
`none` for no face) are merged into faces.csv: rows already there for other images are kept, so
`glamor prepare detect ROOT` afterwards fills in only the images that still have no row.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from glamor_lightning.data.classes import CLASSES, UnknownClassError, canonical_label
from glamor_lightning.data.index import INDEX_NAME, FaceRow, read_index, write_index
from glamor_lightning.data.layout import SPLIT_FOLDERS, ImageEntry, Layout, scan_root

FORMATS = ("glamor-txt", "csv")
Box = tuple[float, float, float, float]


@dataclass
class ImportReport:
    imported: int = 0  # rows from the import (with a face or none)
    no_face: int = 0  # of which `none`
    kept: int = 0  # rows of an earlier faces.csv kept for images the import does not cover
    uncovered: list[str] = field(default_factory=list)  # images with no row at all
    problems: list[str] = field(default_factory=list)

    def text(self, root: Path) -> str:
        lines = [
            f"faces.csv: {self.imported:,} imported rows ({self.no_face:,} without a face), "
            f"{self.kept:,} earlier rows kept"
        ]
        if self.problems:
            lines.append(f"{len(self.problems):,} problems (no row written for them):")
            lines += [f"  {p}" for p in self.problems[:20]] + (["  ..."] if len(self.problems) > 20 else [])
        if self.uncovered:
            lines.append(
                f"{len(self.uncovered):,} images have no box yet (e.g. {self.uncovered[0]}): run "
                f"`glamor prepare detect {root}` to detect them (it keeps the rows above)"
            )
        return "\n".join(lines)


class _Matcher:
    """Finds the image of a layout that a relative path names, `Angry`/`Anger` alike."""

    def __init__(self, layout: Layout) -> None:
        self.by_key: dict[tuple, ImageEntry] = {}
        self.by_stem: dict[tuple, list[ImageEntry]] = {}
        for e in layout.images:
            key = self.key(e.path)
            if key is not None:
                self.by_key[key] = e
                self.by_stem.setdefault(key[:2] + (PurePosixPath(key[2]).with_suffix("").as_posix(),), []).append(e)

    @staticmethod
    def key(rel: str) -> tuple[str, str, str] | None:
        parts = [p for p in PurePosixPath(rel.strip().replace("\\", "/")).parts if p not in ("/", ".")]
        # tolerate leading folders above the root (`CAER-S/train/...`): start at the split folder
        start = next((i for i, p in enumerate(parts) if p.lower() in SPLIT_FOLDERS), None)
        if start is None or len(parts) - start < 3:
            return None
        parts = parts[start:]
        try:
            label = canonical_label(parts[1])
        except UnknownClassError:
            return None
        return SPLIT_FOLDERS[parts[0].lower()], label, "/".join(parts[2:])

    def image(self, rel: str) -> ImageEntry | None:
        key = self.key(rel)
        return self.by_key.get(key) if key else None

    def image_of_stem(self, rel_stem: str) -> list[ImageEntry]:
        key = self.key(rel_stem)
        return self.by_stem.get(key, []) if key else []


def parse_box(fields: Sequence[str]) -> Box | None:
    """Four numbers → box with ordered corners; `0,0,0,0` → None. Raises ValueError when malformed."""
    if len(fields) != 4:
        raise ValueError(f"expected 4 numbers x1,y1,x2,y2, got {len(fields)}")
    x1, y1, x2, y2 = (float(f) for f in fields)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError("box has a non-finite number")
    if x1 == y1 == x2 == y2 == 0:
        return None
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise ValueError(f"empty box {x1:g},{y1:g},{x2:g},{y2:g}")
    return x1, y1, x2, y2


def _row(entry: ImageEntry, box: Box | None) -> FaceRow:
    return FaceRow(entry.split, entry.path, entry.label, box, None, "imported" if box else "none")


def read_txt_tree(box_dir: Path, layout: Layout) -> tuple[dict[str, FaceRow], list[str]]:
    """Rows from a tree of per-image `x1,y1,x2,y2` files mirroring the image tree."""
    box_dir = Path(box_dir)
    if not box_dir.is_dir():
        raise FileNotFoundError(f"No box folder at {box_dir}")
    top = {p.name.lower() for p in box_dir.iterdir() if p.is_dir()}
    if not top & set(SPLIT_FOLDERS):
        raise ValueError(
            f"{box_dir} has no train/, val/ or test/ folder: pass the folder that mirrors "
            f"the image root (DIR/<split>/<Class>/<name>.txt)"
        )
    match = _Matcher(layout)
    rows: dict[str, FaceRow] = {}
    problems: list[str] = []
    for file in sorted(box_dir.rglob("*.txt")):
        rel = file.relative_to(box_dir).as_posix()
        stem = rel[:-4]  # `0001.txt` or `0001.png.txt`
        found = [match.image(stem)] if match.image(stem) else match.image_of_stem(stem)
        if len(found) != 1:
            why = "no image" if not found else f"{len(found)} images ({', '.join(e.path for e in found)})"
            problems.append(f"{file}: {why} of that name under the root")
            continue
        try:
            text = file.read_text().strip()
            box = parse_box([f for f in text.replace(",", " ").split()])
        except (ValueError, UnicodeDecodeError) as err:
            problems.append(f"{file}: {err}")
            continue
        rows[found[0].path] = _row(found[0], box)
    return rows, problems


def _label_of(text: str) -> str:
    text = text.strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(CLASSES):
            raise UnknownClassError(f"label index {i} outside 0..{len(CLASSES) - 1}")
        return CLASSES[i]
    return canonical_label(text)


def read_csv_files(files: Sequence[Path], layout: Layout) -> tuple[dict[str, FaceRow], list[str]]:
    """Rows from `relpath,label,x1,y1,x2,y2` files; the first match of an image wins."""
    match = _Matcher(layout)
    rows: dict[str, FaceRow] = {}
    where_from: dict[str, str] = {}
    problems: list[str] = []
    for file in map(Path, files):
        if not file.is_file():
            raise FileNotFoundError(f"No annotation file at {file}")
        with file.open(newline="") as fh:
            for n, rec in enumerate(csv.reader(fh), start=1):
                where = f"{file}:{n}"
                if not rec or not "".join(rec).strip() or rec[0].lstrip().startswith("#"):
                    continue
                if len(rec) != 6:
                    problems.append(f"{where}: expected relpath,label,x1,y1,x2,y2, got {len(rec)} fields")
                    continue
                try:
                    box = parse_box(rec[2:])
                except ValueError as err:
                    if n == 1:  # a header line
                        continue
                    problems.append(f"{where}: {err}")
                    continue
                entry = match.image(rec[0].strip())
                if entry is None:
                    problems.append(f"{where}: no image {rec[0].strip()!r} under the root")
                    continue
                try:
                    label = _label_of(rec[1])
                except UnknownClassError as err:
                    problems.append(f"{where}: {err}")
                    continue
                if label != entry.label:
                    problems.append(
                        f"{where}: label {rec[1].strip()!r} ({label}) disagrees with the "
                        f"folder of {entry.path} ({entry.label})"
                    )
                    continue
                row = _row(entry, box)
                if entry.path in rows:
                    if rows[entry.path] != row:
                        problems.append(
                            f"{where}: {entry.path} again with another box (kept the one from {where_from[entry.path]})"
                        )
                    continue
                rows[entry.path], where_from[entry.path] = row, where
    return rows, problems


def import_boxes(
    root: str | os.PathLike,
    fmt: str,
    sources: Sequence[str | os.PathLike],
    keep_existing: bool = True,
    layout: Layout | None = None,
) -> ImportReport:
    """Read boxes in `fmt` from `sources` and merge them into ROOT/faces.csv (written atomically)."""
    if fmt not in FORMATS:
        raise ValueError(f"import format {fmt!r}; expected one of {FORMATS}")
    root = Path(root)
    layout = layout or scan_root(root)
    if fmt == "glamor-txt":
        if len(sources) != 1:
            raise ValueError("--format glamor-txt takes one folder")
        imported, problems = read_txt_tree(Path(sources[0]), layout)
    else:
        imported, problems = read_csv_files([Path(s) for s in sources], layout)
    existing: dict[str, FaceRow] = {}
    if keep_existing and (root / INDEX_NAME).is_file():
        entries = layout.by_path()
        existing = {
            r.path: r
            for r in read_index(root / INDEX_NAME)
            if (e := entries.get(r.path)) and (e.split, e.label) == (r.split, r.label)
        }
    report = ImportReport(problems=problems)
    rows = []
    for e in layout.images:
        if e.path in imported:
            rows.append(imported[e.path])
            report.imported += 1
            report.no_face += imported[e.path].box is None
        elif e.path in existing:
            rows.append(existing[e.path])
            report.kept += 1
        else:
            report.uncovered.append(e.path)
    write_index(root / INDEX_NAME, rows)
    return report
