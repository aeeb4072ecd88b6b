"""`glamor prepare STEP ...`: make or index a data set.

    glamor prepare synth OUT [--per-class N] [--seed S]    the embedded SynthCAER data set
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from glamor_lightning.data.synth import SynthConfig, generate

    cfg = SynthConfig(per_class_train=args.per_class, per_class_val=args.per_class_val,
                      per_class_test=args.per_class_test, width=args.width, height=args.height,
                      weak_fraction=args.weak_fraction, max_distractors=args.max_distractors, seed=args.seed)
    started = time.perf_counter()
    out = generate(Path(args.out), cfg, workers=args.workers, progress=True)
    total = 7 * (cfg.per_class_train + cfg.per_class_val + cfg.per_class_test)
    print(f"SynthCAER: {total} images and faces.csv in {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _add_synth(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("synth", help="generate SynthCAER (images + faces.csv with true boxes)")
    p.add_argument("out", help="output root, e.g. data/synthcaer")
    p.add_argument("--per-class", type=int, default=400, help="train images per class (default 400)")
    p.add_argument("--per-class-val", type=int, default=80, help="val images per class (default 80)")
    p.add_argument("--per-class-test", type=int, default=120, help="test images per class (default 120)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--weak-fraction", type=float, default=0.4,
                   help="fraction of target faces with a weak, nearly neutral expression (default 0.4)")
    p.add_argument("--max-distractors", type=int, default=2, help="0..N bystanders per image (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.set_defaults(func=_synth)


#: every `prepare` step; other modules' steps are appended here
STEPS = [_add_synth]


def register(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser("prepare", help="make or index a data set")
    steps = prepare.add_subparsers(dest="step", required=True, metavar="STEP")
    for add in STEPS:
        add(steps)
