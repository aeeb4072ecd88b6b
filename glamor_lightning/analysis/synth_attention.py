"""Where a checkpoint's context attention goes on SynthCAER: on the companion, on distractors, or elsewhere.

On SynthCAER the companion (same hair/hat colour as the target, same emotion, strongly shown) is the
context worth reading, and distractors (other colours, random emotions) mislead; only the target's own
colour, seen in the face crop, tells them apart. Face-guided attention (GLA) should therefore put more
of its mass on the companion's head than standard attention, which never sees the face.

For every test image this redraws the scene (`sample_scene`), maps each bystander's head box into the
112×112 evaluation crop of the context (resize to the context size, centre crop), and sums the attention
mass of the cells weighted by how much of each cell the head covers (attention is taken as even within a
cell). Reported per checkpoint, over images with at least one distractor (where picking matters):

- companion / distractor mass: the mean share of attention on the companion's head / on one distractor's head;
- lift: that share over the head's share of the crop's area (1 = no preference; uniform attention gives 1);
- companion first: how often the companion's head gets more mass than every distractor's head; chance:
  the same rate for attention that ranks heads at random (1/(distractors+1), averaged over the images).

    python -m glamor_lightning.analysis.synth_attention CKPT [CKPT ...] [--data data/synthcaer]
    python -m glamor_lightning.analysis.synth_attention --visibility [--data data/synthcaer]

`--visibility` says how often the companion's head is inside the evaluation crop at all (whole, in part,
or cut off), which bounds what any context reader can get from it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glamor_lightning.data.geometry import CONTEXT_SIZE, CROP_SIZE, Box

#: where `make synth` puts SynthCAER (for --visibility without --data)
DEFAULT_ROOT = "data/synthcaer"


def crop_box(box: Box, image_hw: tuple[int, int], context_hw: tuple[int, int], crop: int) -> Box:
    """A box of the original image in the centre crop of the resized context (as the eval transform cuts it)."""
    sy, sx = context_hw[0] / image_hw[0], context_hw[1] / image_hw[1]
    top, left = (context_hw[0] - crop) // 2, (context_hw[1] - crop) // 2
    return box[0] * sx - left, box[1] * sy - top, box[2] * sx - left, box[3] * sy - top


def cell_coverage(box: Box, grid_hw: tuple[int, int], crop: int) -> np.ndarray:
    """[h, w]: the share of each attention cell (a crop/h × crop/w tile) that `box` covers."""
    h, w = grid_hw
    ys, xs = np.linspace(0, crop, h + 1), np.linspace(0, crop, w + 1)
    oy = np.clip(np.minimum(ys[1:], box[3]) - np.maximum(ys[:-1], box[1]), 0, None) / np.diff(ys)
    ox = np.clip(np.minimum(xs[1:], box[2]) - np.maximum(xs[:-1], box[0]), 0, None) / np.diff(xs)
    return np.outer(oy, ox)


@dataclass
class AttentionOnPeople:
    """Mean attention shares of one checkpoint over the test images with at least one distractor."""

    images: int
    companion_mass: float
    distractor_mass: float
    companion_lift: float
    distractor_lift: float
    companion_first: float
    chance_first: float  #: companion first for a random ranking of the heads


def measure(module, datamodule, batch_size: int = 64) -> AttentionOnPeople:
    """Run `module` on the test split of a set-up SynthCAER data module and score its attention maps."""
    from glamor_lightning.analysis.attention_maps import dataset_batch, run_model
    from glamor_lightning.data.synth import load_config, parse_file_name, sample_scene

    cfg = load_config(datamodule.root)
    hp = datamodule.hparams
    context_hw, crop = tuple(hp.context_size), int(hp.crop_size)
    dataset = datamodule.dataset("test")
    comp_mass, dis_mass, comp_lift, dis_lift, first, chance = [], [], [], [], [], []
    for start in range(0, len(dataset), batch_size):
        positions = range(start, min(start + batch_size, len(dataset)))
        faces, contexts, _, rows = dataset_batch(dataset, positions)
        attention = run_model(module, faces, contexts).attention
        for att, r in zip(attention, rows):
            scene = sample_scene(cfg, *parse_file_name(datamodule.rows[int(r)].path))
            if scene.companion is None or len(scene.bystanders) < 2:
                continue
            att = np.asarray(att, dtype=np.float64).reshape(att.shape[-2:])
            att = att / att.sum()
            masses, lifts = [], []
            for person in scene.bystanders:
                box = crop_box(person.box, (cfg.height, cfg.width), context_hw, crop)
                cover = cell_coverage(box, att.shape, crop)
                area = cover.mean()  # the head's share of the crop
                masses.append(float((att * cover).sum()))
                lifts.append(masses[-1] / area if area > 0 else np.nan)
            c = scene.companion
            others = [i for i in range(len(masses)) if i != c]
            comp_mass.append(masses[c])
            comp_lift.append(lifts[c])
            dis_mass += [masses[i] for i in others]
            dis_lift += [lifts[i] for i in others]
            first.append(all(masses[c] > masses[i] for i in others))
            chance.append(1 / len(masses))
    if not first:
        raise ValueError(f"no test image of {datamodule.root} has a companion and a distractor")
    return AttentionOnPeople(
        len(first),
        float(np.mean(comp_mass)),
        float(np.mean(dis_mass)),
        float(np.nanmean(comp_lift)),
        float(np.nanmean(dis_lift)),
        float(np.mean(first)),
        float(np.mean(chance)),
    )


def companion_visibility(
    root: str | Path, split: str = "test", context_hw: tuple[int, int] = CONTEXT_SIZE, crop: int = CROP_SIZE
) -> dict[str, float]:
    """Shares of a split's images whose companion head is whole / partly / not inside the centre crop."""
    from glamor_lightning.data.index import INDEX_NAME, read_index
    from glamor_lightning.data.synth import load_config, parse_file_name, sample_scene

    cfg = load_config(root)
    seen = {"whole": 0, "partly": 0, "cut off": 0, "no companion": 0}
    for row in (r for r in read_index(Path(root) / INDEX_NAME) if r.split == split):
        scene = sample_scene(cfg, *parse_file_name(row.path))
        if scene.companion is None:
            seen["no companion"] += 1
            continue
        box = crop_box(scene.bystanders[scene.companion].box, (cfg.height, cfg.width), context_hw, crop)
        inside = cell_coverage(box, (1, 1), crop)[0, 0] * crop * crop / ((box[2] - box[0]) * (box[3] - box[1]))
        seen["whole" if inside > 0.99 else "partly" if inside > 0 else "cut off"] += 1
    total = sum(seen.values())
    if not total:
        raise ValueError(f"{root} has no {split} images")
    return {k: v / total for k, v in seen.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from glamor_lightning.checkpoints import module_from_checkpoint, read_checkpoint
    from glamor_lightning.data.contract import test_ready_datamodule

    p = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.synth_attention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ckpts", nargs="*", help="checkpoints trained on SynthCAER")
    p.add_argument("--visibility", action="store_true", help="only: how often the companion is in the eval crop")
    p.add_argument("--data", default=None, help=f"the SynthCAER root (default: the checkpoint's, else {DEFAULT_ROOT})")
    args = p.parse_args(argv)
    if args.visibility or not args.ckpts:
        shares = companion_visibility(args.data or DEFAULT_ROOT)
        print("companion head in the eval crop: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items()))
        return 0
    print(
        "| checkpoint | inputs | attention | images | companion mass (%) | distractor mass (%) | companion lift | "
        "distractor lift | companion first (%) | chance (%) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for path in args.ckpts:
            ckpt = read_checkpoint(path)
            module = module_from_checkpoint(ckpt, path)
            if module.hparams.inputs == "face":
                raise ValueError(f"{path}: a face-only model has no context attention to measure")
            r = measure(module, test_ready_datamodule(ckpt, module.data_contract, args.data, where=path))
            print(
                f"| {path} | {module.hparams.inputs} | {module.hparams.attention} | {r.images} | "
                f"{100 * r.companion_mass:.1f} | {100 * r.distractor_mass:.1f} | {r.companion_lift:.2f} | "
                f"{r.distractor_lift:.2f} | "
                f"{100 * r.companion_first:.1f} | {100 * r.chance_first:.1f} |",
                flush=True,
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"synth_attention: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
