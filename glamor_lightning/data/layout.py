"""What a data root holds: `ROOT/{train,val,test}/<Class>/<image>`, scanned and summarised.

The scan is the single source of truth for which images a root has; `detect`, `import` and the NCAER-S
builder all start from it. Rules:
- split folders `train`, `val` (or `validation`) and `test`, case-insensitively; CAER-S has no val/;
- class folders are one of the seven classes (`Angry` and `Anger` both mean Anger); any other folder
  inside a split is an error that names it, never a silent label;
- images are recognised by extension, case-insensitively (`.png`, `.JPG`, ...); sub-folders of a class
  folder are searched too;
- hidden entries (`.cache`, `.DS_Store`) and files at the top of the root (`faces.csv`) are not images;
  other files (non-images, files outside class folders, unknown top-level folders) are listed as ignored;
- a root with no image in a class folder is an error that says what the layout should be and what was
  found instead, so that no step goes on with zero images.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from glamor_lightning.data.classes import CLASSES, canonical_label
from glamor_lightning.data.images import is_image_name
from glamor_lightning.data.index import SPLITS

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
#: the layout every data root must have, for error messages
EXPECTED_LAYOUT = (
    f"expected ROOT/{{train,val,test}}/<Class>/<image>, where val/ is optional (or named "
    f"validation/) and <Class> is one of {', '.join(CLASSES)} (or Angry)"
)


class LayoutError(ValueError):
    """A root that is not `ROOT/<split>/<Class>/<image>`; the message says what was found."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a root: its split, path relative to the root (forward slashes), canonical label."""

    split: str
    path: str
    label: str


@dataclass
class Layout:
    root: Path
    images: list[ImageEntry]
    ignored: list[str] = field(default_factory=list)  # relative paths that are not images of a class

    def __len__(self) -> int:
        return len(self.images)

    def by_path(self) -> dict[str, ImageEntry]:
        return {e.path: e for e in self.images}

    def counts(self) -> dict[str, Counter]:
        """split → Counter(label → images), splits in train/val/test order."""
        out: dict[str, Counter] = {}
        for e in self.images:
            out.setdefault(e.split, Counter())[e.label] += 1
        return {s: out[s] for s in SPLITS if s in out}

    def summary(self) -> str:
        """A table of images per split and class, with what was ignored."""
        counts = self.counts()
        names = [c[:8] for c in CLASSES]
        head = f"{'split':<6}" + "".join(f"{n:>9}" for n in names) + f"{'total':>9}"
        lines = [f"{self.root}: {len(self.images):,} images", head]
        for split, c in counts.items():
            lines.append(f"{split:<6}" + "".join(f"{c.get(k, 0):>9,}" for k in CLASSES) + f"{sum(c.values()):>9,}")
        for split, c in counts.items():
            missing = [k for k in CLASSES if not c.get(k)]
            if missing:
                lines.append(f"note: {split}/ has no images of {', '.join(missing)}")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(f"ignored {len(self.ignored)} entries that are not images in a class folder: {shown}")
        return "\n".join(lines)


def _walk_files(folder: Path) -> list[Path]:
    """All non-hidden files under `folder` (symlinks followed), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(found)


def scan_root(root: str | os.PathLike) -> Layout:
    """Every image of a data root with its split and label; see the module docstring for the rules."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"Data root {str(root)!r} is not a folder.")
    images: list[ImageEntry] = []
    ignored: list[str] = []
    top = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    split_dirs = [p for p in top if p.is_dir() and p.name.lower() in SPLIT_FOLDERS]
    if not split_dirs:
        seen = ", ".join(p.name + ("/" if p.is_dir() else "") for p in top[:10]) or "nothing"
        raise LayoutError(
            f"{root} has no train/, val/ or test/ folder (found: {seen}); point at the "
            f"folder that holds the split folders: {EXPECTED_LAYOUT}."
        )
    ignored += [p.name + "/" for p in top if p.is_dir() and p not in split_dirs]
    empty: list[str] = []  # split and class folders without an image, for the error on zero images
    for split_dir in split_dirs:
        split = SPLIT_FOLDERS[split_dir.name.lower()]
        entries = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
        if not entries:
            empty.append(f"{split_dir.name}/ (empty)")
        for entry in entries:
            rel = entry.relative_to(root).as_posix()
            if not entry.is_dir():
                ignored.append(rel)
                continue
            label = canonical_label(entry.name, where=f"{root}/{rel}")  # unknown folder: an error naming it
            before = len(images)
            for file in _walk_files(entry):
                frel = file.relative_to(root).as_posix()
                if is_image_name(file.name):
                    images.append(ImageEntry(split, frel, label))
                else:
                    ignored.append(frel)
            if len(images) == before:
                empty.append(f"{rel}/ (no images)")
    if not images:
        found = ignored + empty
        shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
        raise LayoutError(
            f"{root} holds no image in a class folder: {EXPECTED_LAYOUT}. Found instead: "
            f"{shown}. Move the images into their class folders."
        )
    images.sort(key=lambda e: (SPLITS.index(e.split), e.path))
    return Layout(root=root, images=images, ignored=ignored)
