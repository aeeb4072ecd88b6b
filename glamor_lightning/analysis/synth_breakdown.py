"""Accuracy on SynthCAER split by what each test image demands: a weak or strong face, with or without distractors.

SynthCAER is generated from `SynthConfig` alone, so the content of every image can be drawn again without
rendering it (`sample_scene`). That tells, for each row of a run's `predictions.csv`:

- `weak` / `strong`: the target's face shows the label at weak (near-neutral) or strong intensity;
  weak faces are where the context has to supply the answer;
- `distractors`: how many bystanders with other colours (and random emotions) surround the target;
  with none, the only bystander is the companion, so any context read gives the answer; with some, the
  model must tell the companion apart, which only the target's hair/hat colour allows (face guidance);
- with `--companion`: whether the companion's face is inside the context the model sees at test (the image
  resized to the context size, then centre-cropped: 112×112 of 128×171 with the defaults, so a sixth of the
  width goes on each side). A weak face whose companion is cropped out has nothing in its context to tell.

The generating config is read from `ROOT/synthcaer.json` (written by `glamor prepare synth`); a root
without it is assumed to use the defaults. Either way every row's drawn face box must equal its box in
`ROOT/faces.csv`, otherwise the config is not the one that made the images and this is an error.

ROOT is the data root a run folder recorded (its saved config), so each run is split by the scenes it was tested
on; `--data` names it for a bare predictions file (default data/synthcaer), and a `--data` that is another
SynthCAER than the one a run recorded is an error (file names repeat from one SynthCAER to another: the wrong
scenes would be counted without complaint).

    python -m glamor_lightning.analysis.synth_breakdown RUN_DIR [RUN_DIR ...] [--ensemble]   # a row per run
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glamor_lightning.analysis.predictions import read_predictions
from glamor_lightning.data.geometry import CONTEXT_SIZE, CROP_SIZE
from glamor_lightning.data.index import INDEX_NAME, read_index
from glamor_lightning.data.synth import CONFIG_NAME, SynthConfig, load_config, parse_file_name, sample_scene

GROUPS = ("weak", "strong", "weak, 0 distractors", "weak, 1+ distractors")
#: the data root of a bare predictions file given without --data
DEFAULT_ROOT = "data/synthcaer"
#: `--companion`: weak faces by whether their companion's face centre is inside the test crop of the context
COMPANION_GROUPS = ("weak, companion in the crop", "weak, companion cropped out")


class SynthBreakdownError(ValueError):
    """Predictions that cannot be matched to SynthCAER scenes; the message names the file and row."""


@dataclass(frozen=True)
class SceneFacts:
    """What one image asks of the model."""

    weak: bool
    distractors: int
    #: the companion's face centre (x, y) as fractions of the image's width and height; None without a companion
    companion: tuple[float, float] | None = None

    def companion_in_crop(self, context_size: tuple[int, int] = CONTEXT_SIZE, crop: int = CROP_SIZE) -> bool:
        """Whether the companion's face centre survives the test-time centre crop of the resized context."""
        if self.companion is None:
            return False
        (h, w), (x, y) = context_size, self.companion
        top, left = (h - crop) // 2, (w - crop) // 2  # as `transforms.center_crop`
        return left <= x * w < left + crop and top <= y * h < top + crop


def scene_facts(cfg: SynthConfig, path: str, box: tuple[float, float, float, float] | None, where: str) -> SceneFacts:
    """Draw the scene of a SynthCAER file name again and check its face box against the index."""
    try:
        scene = sample_scene(cfg, *parse_file_name(path))
    except ValueError as err:
        raise SynthBreakdownError(f"{where}: {err}") from None
    if box is None or any(abs(a - b) > 0.5 for a, b in zip(scene.target.box, box)):
        raise SynthBreakdownError(
            f"{where}: {path}: its face box {box} in {INDEX_NAME} is not the one "
            f"SynthConfig(seed={cfg.seed}, ...) draws ({scene.target.box}): this root was "
            f"made with another config; write it to {CONFIG_NAME}"
        )
    distractors = sum(1 for i in range(len(scene.bystanders)) if i != scene.companion)
    companion = None
    if scene.companion is not None:
        x1, y1, x2, y2 = scene.bystanders[scene.companion].box
        companion = ((x1 + x2) / 2 / cfg.width, (y1 + y2) / 2 / cfg.height)
    return SceneFacts(weak=scene.weak, distractors=distractors, companion=companion)


def breakdown(
    predictions_csv: str | Path, root: str | Path, crop: tuple[tuple[int, int], int] | None = None
) -> dict[str, tuple[int, int]]:
    """(images, correct) per group of `GROUPS` (and `COMPANION_GROUPS` with `crop`), and `all`, for one run's
    predictions on a SynthCAER root."""
    preds = read_predictions(predictions_csv)
    return count_groups(preds.paths, preds.correct, root, str(predictions_csv), crop)


def ensemble_correct(files: Sequence[str | Path]) -> tuple[list[str], np.ndarray]:
    """(paths, correct) of the product of several runs' class probabilities (a late-fusion reference)."""
    preds = [read_predictions(f) for f in files]
    first = preds[0]
    for p in preds[1:]:
        if sorted(p.paths) != sorted(first.paths) or p.classes != first.classes:
            raise SynthBreakdownError(f"{p.source} and {first.source} do not cover the same images and classes")

    def aligned(p) -> np.ndarray:  # rows in the first file's order
        position = {x: i for i, x in enumerate(p.paths)}
        return p.probs[[position[x] for x in first.paths]]

    scores = sum(np.log(np.clip(aligned(p), 1e-9, None)) for p in preds)
    predicted = [first.classes[i] for i in np.argmax(scores, axis=1)]
    return first.paths, np.array([t == q for t, q in zip(first.true, predicted)])


def count_groups(
    paths: Sequence[str],
    correct: Sequence[bool],
    root: str | Path,
    where: str,
    crop: tuple[tuple[int, int], int] | None = None,
) -> dict[str, tuple[int, int]]:
    """(images, correct) per group of `GROUPS`, and `all`, for predictions on the SynthCAER `root`; with
    `crop` = (context size, crop size), also per group of `COMPANION_GROUPS`."""
    root = Path(root)
    boxes = {r.path: r.box for r in read_index(root / INDEX_NAME)}
    cfg = load_config(root)
    counts = {g: [0, 0] for g in (*GROUPS, *(COMPANION_GROUPS if crop else ()), "all")}
    for path, ok in zip(paths, correct):
        if path not in boxes:
            raise SynthBreakdownError(f"{where}: {path!r} is not in {root / INDEX_NAME}")
        facts = scene_facts(cfg, path, boxes[path], where)
        groups = ["all", "weak" if facts.weak else "strong"]
        if facts.weak:
            groups.append("weak, 0 distractors" if facts.distractors == 0 else "weak, 1+ distractors")
            if crop:
                groups.append(COMPANION_GROUPS[0] if facts.companion_in_crop(*crop) else COMPANION_GROUPS[1])
        for g in groups:
            counts[g][0] += 1
            counts[g][1] += int(ok)
    return {g: (n, c) for g, (n, c) in counts.items()}


def is_synthcaer(root: str | Path) -> bool:
    """Whether `root` looks like SynthCAER: a faces.csv whose rows all come from the generator."""
    index = Path(root) / INDEX_NAME
    if not index.is_file():
        return False
    try:
        rows = read_index(index)
    except ValueError:
        return False
    return bool(rows) and all(r.source == "synthetic" for r in rows)


def breakdown_table(runs: Sequence, labels: dict[str, str] | None = None) -> str | None:
    """Markdown: per setting (a run's `experiment`), the mean accuracy of each group over its runs.

    `runs` are `ablation_runs.Run`s; only those tested on a SynthCAER root with a `predictions.csv` count.
    None when there is none.
    """
    groups: dict[str, list[dict[str, tuple[int, int]]]] = {}
    for r in runs:
        root, f = r.recipe.get("data.root"), Path(r.path) / "predictions.csv"
        if r.test_acc is None or not root or not f.is_file() or not is_synthcaer(root):
            continue
        groups.setdefault(r.experiment, []).append(breakdown(f, root))
    if not groups:
        return None
    first = next(iter(groups.values()))[0]
    lines = [
        "| Setting | " + " | ".join(f"{g} (n={first[g][0]})" for g in (*GROUPS, "all")) + " | Seeds |",
        "|---|" + "---:|" * (len(GROUPS) + 2),
    ]
    for name, counts in groups.items():
        cells = [
            f"{100 * np.mean([c[g][1] / c[g][0] for c in counts]):.1f}" if first[g][0] else "-"
            for g in (*GROUPS, "all")
        ]
        lines.append(f"| {(labels or {}).get(name, f'`{name}`')} | " + " | ".join(cells) + f" | {len(counts)} |")
    return "\n".join(lines)


def recorded_root(run: str | Path) -> Path | None:
    """The data root a Hydra run folder was trained and tested on (its saved config), None for a bare
    predictions file or a folder that records none."""
    from glamor_lightning.analysis.ablation_runs import read_run

    run = Path(run)
    if not (run / ".hydra").is_dir() and not (run / "csv" / "hparams.yaml").is_file():
        return None
    root = read_run(run).recipe.get("data.root")
    return Path(root) if root else None


def root_of(run: str | Path, data: str | Path | None) -> Path:
    """The SynthCAER root whose scenes `run`'s predictions are about: the one the run recorded, else `data`
    (else `DEFAULT_ROOT`). A `data` that is another SynthCAER than the recorded one is an error: file names repeat
    from root to root, so its scenes would be counted without complaint, and wrongly."""
    recorded = recorded_root(run)
    if recorded is None:
        return Path(data or DEFAULT_ROOT)
    if data is None:
        if not (recorded / INDEX_NAME).is_file():
            raise SynthBreakdownError(
                f"{run} was tested on {recorded}, which holds no {INDEX_NAME} here: pass --data with that SynthCAER"
            )
        return recorded
    known = (recorded / CONFIG_NAME).is_file() and (Path(data) / CONFIG_NAME).is_file()
    if known and load_config(recorded) != load_config(data):
        raise SynthBreakdownError(
            f"{run} was tested on {recorded} (SynthConfig seed {load_config(recorded).seed}); --data {data} is "
            f"another SynthCAER (seed {load_config(data).seed}): its scenes are not this run's. Leave --data out"
        )
    return Path(data)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.synth_breakdown",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="run folders holding predictions.csv (or the files themselves)")
    p.add_argument(
        "--data",
        default=None,
        help="the SynthCAER root the runs were tested on (default: the one each run folder recorded, else "
        f"{DEFAULT_ROOT})",
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="also a row for the product of the runs' probabilities (e.g. face only x context only)",
    )
    p.add_argument(
        "--companion",
        action="store_true",
        help="also weak faces by whether the companion is inside the test crop of the context (default sizes)",
    )
    args = p.parse_args(argv)
    files = [Path(r) / "predictions.csv" if Path(r).is_dir() else Path(r) for r in args.runs]
    crop = (CONTEXT_SIZE, CROP_SIZE) if args.companion else None
    columns = (*GROUPS, *(COMPANION_GROUPS if crop else ()), "all")
    try:
        roots = [root_of(run, args.data) for run in args.runs]
        rows = [(run, breakdown(f, root, crop)) for run, f, root in zip(args.runs, files, roots)]
        if args.ensemble:
            if len({r.resolve() for r in roots}) > 1:
                raise SynthBreakdownError(
                    f"--ensemble needs runs tested on one root; these were on {sorted(set(map(str, roots)))}"
                )
            rows.append(
                (
                    "ensemble (product of probabilities)",
                    count_groups(*ensemble_correct(files), roots[0], "the ensemble", crop),
                )
            )
    except (SynthBreakdownError, FileNotFoundError, ValueError) as err:
        print(f"synth_breakdown: error: {err}", file=sys.stderr)
        return 2
    print("| run | " + " | ".join(f"{g} (%)" for g in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, counts in rows:
        cells = [f"{100 * c / n:.1f} (n={n})" if n else "-" for n, c in (counts[g] for g in columns)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
