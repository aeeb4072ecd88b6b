"""SynthCAER: a generated stand-in for CAER-S, so the whole pipeline runs with no download.

Each image shows a target person whose face carries the label (strongly, or so weakly that it looks
neutral), a companion who shares the target's hair/hat colour and shows the same emotion strongly, and
distractors with other colours and random emotions. Companion and distractors are placed alike, so only
the colour visible inside the target's face box tells which bystander belongs to the target: the face
guides the context, as GLAMOR-Net's global-local attention assumes. See docs/synthcaer.md.

This module writes the data set (config, file names, faces.csv); scenes are sampled in `synth_scene`
and drawn in `synth_render`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
from pathlib import Path

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.index import INDEX_NAME, SPLITS, FaceRow, write_index
from glamor_lightning.data.synth_render import render
from glamor_lightning.data.synth_scene import PARAMS, SynthConfig, sample_scene  # noqa: F401 - the public API

CONFIG_NAME = "synthcaer.json"  # the generating SynthConfig, written next to faces.csv


def save_config(root: str | Path, cfg: SynthConfig) -> Path:
    """Write the generating config next to the images (`ROOT/synthcaer.json`)."""
    path = Path(root) / CONFIG_NAME
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    return path


def load_config(root: str | Path) -> SynthConfig:
    """The config that made `root`: `ROOT/synthcaer.json`, or the defaults when the root has none."""
    path = Path(root) / CONFIG_NAME
    if not path.is_file():
        return SynthConfig()
    raw = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown SynthConfig field(s) {', '.join(unknown)}")
    return SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _file_name(split: str, label: str, index: int) -> str:
    return f"{split}/{label}/{split}_{label.lower()}_{index:04d}.png"


_FILE_NAME = re.compile(r"^(train|val|test)/([A-Za-z]+)/\1_([a-z]+)_(\d+)\.png$")


def parse_file_name(path: str) -> tuple[str, str, int]:
    """(split, label, index) of a SynthCAER file name (the inverse of how `generate` names files)."""
    m = _FILE_NAME.match(path)
    if not m or m.group(2) not in CLASSES or m.group(3) != m.group(2).lower():
        raise ValueError(f"{path!r} is not a SynthCAER file name (split/Class/split_class_NNNN.png)")
    return m.group(1), m.group(2), int(m.group(4))


def _make_one(job: tuple[str, SynthConfig, str, str, int]) -> FaceRow:
    out, cfg, split, label, index = job
    scene = sample_scene(cfg, split, label, index)
    rel = _file_name(split, label, index)
    render(cfg, scene).save(Path(out) / rel, format="PNG", compress_level=1)  # fast; sizes barely differ
    return FaceRow(split=split, path=rel, label=label, box=scene.target.box, score=1.0, source="synthetic")


def generate(
    out: Path | str, cfg: SynthConfig | None = None, workers: int | None = None, progress: bool = False
) -> Path:
    """Write SynthCAER under `out` (`{split}/{Class}/*.png`, then `faces.csv` last) and return `out`.

    The same config gives byte-identical files whatever `workers` is; `faces.csv` only appears once
    every image is written, so its presence marks a complete data set. `cfg` None: the defaults.
    """
    out, cfg = Path(out), cfg or SynthConfig()
    (out / INDEX_NAME).unlink(missing_ok=True)
    jobs = [(str(out), cfg, s, c, i) for s in SPLITS for c in CLASSES for i in range(cfg.per_class(s))]
    for s in SPLITS:
        for c in CLASSES:
            (out / s / c).mkdir(parents=True, exist_ok=True)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        rows = [_make_one(j) for j in _progress(jobs, progress)]
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            rows = list(_progress(pool.imap(_make_one, jobs, chunksize=32), progress, total=len(jobs)))
    save_config(out, cfg)
    write_index(out / INDEX_NAME, rows)  # jobs are in (split, class, index) order, so rows are too
    return out


def _progress(it, enabled: bool, total: int | None = None):
    """Wrap an iterable in a rich progress bar when asked and rich is installed."""
    if not enabled:
        return it
    try:
        from rich.progress import track
    except ImportError:
        return it
    return track(it, total=total if total is not None else len(it), description="SynthCAER")
