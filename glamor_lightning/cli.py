"""The `glamor` command.

    glamor prepare synth OUT [--per-class N] [--seed S] ...   make the embedded SynthCAER data set
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence


def _prepare_synth(args: argparse.Namespace) -> int:
    from glamor_lightning.data.synth import SynthConfig, generate

    cfg = SynthConfig(per_class_train=args.per_class, per_class_val=args.per_class_val,
                      per_class_test=args.per_class_test, width=args.width, height=args.height,
                      weak_fraction=args.weak_fraction, max_distractors=args.max_distractors, seed=args.seed)
    started = time.perf_counter()
    out = generate(Path(args.out), cfg, workers=args.workers, progress=True)
    total = 7 * (cfg.per_class_train + cfg.per_class_val + cfg.per_class_test)
    print(f"SynthCAER: {total} images and faces.csv in {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser("prepare", help="make or index a data set")
    steps = prepare.add_subparsers(dest="step", required=True)

    synth = steps.add_parser("synth", help="generate SynthCAER (images + faces.csv with true boxes)")
    synth.add_argument("out", help="output root, e.g. data/synthcaer")
    synth.add_argument("--per-class", type=int, default=400, help="train images per class (default 400)")
    synth.add_argument("--per-class-val", type=int, default=80, help="val images per class (default 80)")
    synth.add_argument("--per-class-test", type=int, default=120, help="test images per class (default 120)")
    synth.add_argument("--width", type=int, default=320)
    synth.add_argument("--height", type=int, default=180)
    synth.add_argument("--weak-fraction", type=float, default=0.4,
                       help="fraction of target faces with a weak, nearly neutral expression")
    synth.add_argument("--max-distractors", type=int, default=2, help="0..N bystanders per image")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    synth.set_defaults(func=_prepare_synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glamor", description="GLAMOR-Net tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_prepare]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"glamor: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
