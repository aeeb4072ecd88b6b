"""`glamor prepare STEP ...`: make or index a data set.

    glamor prepare synth OUT [--per-class N] [--seed S]    the embedded SynthCAER data set
    glamor prepare scan ROOT                               images per split and class of a root
    glamor prepare detect ROOT [--device D] [--batch-size N] [--policy P] [--threshold T]
                                                           MTCNN face boxes -> ROOT/faces.csv (resumable)
    glamor prepare import ROOT --format glamor-txt DIR | --format csv FILE...
                                                           face boxes you already have -> ROOT/faces.csv
    glamor prepare cache ROOT [--workers N]                the packed training cache of a root
    glamor prepare ncaer CAER_ROOT OUT [--segment-seconds 2] [--seed S]
                                                           NCAER-S frames from the CAER videos
See docs/real-data.md for the CAER-S and NCAER-S walkthrough.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from glamor_lightning.arguments import fraction, int_at_least

#: the smallest SynthCAER image (width, height): the renderer's heads are 24-60 px tall (at most 0.45 of
#: the height) and a companion must fit beside the target
MIN_SYNTH_SIZE = (96, 54)


def _synth(args: argparse.Namespace) -> int:
    from glamor_lightning.data.synth import SynthConfig, generate

    cfg = SynthConfig(
        per_class_train=args.per_class,
        per_class_val=args.per_class_val,
        per_class_test=args.per_class_test,
        width=args.width,
        height=args.height,
        weak_fraction=args.weak_fraction,
        max_distractors=args.max_distractors,
        seed=args.seed,
    )
    started = time.perf_counter()
    out = generate(Path(args.out), cfg, workers=args.workers, progress=True)
    total = 7 * (cfg.per_class_train + cfg.per_class_val + cfg.per_class_test)
    print(f"SynthCAER: {total} images and faces.csv in {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _add_synth(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("synth", help="generate SynthCAER (images + faces.csv with true boxes)")
    p.add_argument("out", help="output root, e.g. data/synthcaer")
    size = " px: SynthCAER's renderer needs images of at least {}×{} px (width×height)".format(*MIN_SYNTH_SIZE)
    p.add_argument(
        "--per-class",
        type=int_at_least(1, " (a data set needs training images)"),
        default=400,
        help="train images per class (default 400)",
    )
    p.add_argument("--per-class-val", type=int_at_least(0), default=80, help="val images per class (default 80)")
    p.add_argument("--per-class-test", type=int_at_least(0), default=120, help="test images per class (default 120)")
    p.add_argument(
        "--width",
        type=int_at_least(MIN_SYNTH_SIZE[0], size),
        default=320,
        help=f"image width (default 320, at least {MIN_SYNTH_SIZE[0]})",
    )
    p.add_argument(
        "--height",
        type=int_at_least(MIN_SYNTH_SIZE[1], size),
        default=180,
        help=f"image height (default 180, at least {MIN_SYNTH_SIZE[1]})",
    )
    p.add_argument(
        "--weak-fraction",
        type=fraction,
        default=0.4,
        help="fraction of target faces with a weak, nearly neutral expression (default 0.4)",
    )
    p.add_argument("--max-distractors", type=int_at_least(0), default=2, help="0..N bystanders per image (default 2)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.set_defaults(func=_synth)


def _scan(args: argparse.Namespace) -> int:
    from glamor_lightning.data.layout import scan_root

    print(scan_root(args.root).summary())
    return 0


def _add_scan(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("scan", help="list the images of a root per split and class (checks the layout)")
    p.add_argument("root", help="data root holding train/ [val/] test/ with one folder per class")
    p.set_defaults(func=_scan)


def _detect(args: argparse.Namespace) -> int:
    from glamor_lightning.data.detect import detect_root
    from glamor_lightning.data.layout import scan_root

    def stop(signum, frame):  # `kill` (SIGTERM, e.g. a cluster's time limit) saves as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        layout = scan_root(args.root)
        print(layout.summary())
        summary = detect_root(
            args.root,
            device=args.device,
            batch_size=args.batch_size,
            policy=args.policy,
            threshold=args.threshold,
            min_face_size=args.min_face_size,
            flush_every=args.flush_every,
            redo=args.redo,
            workers=args.read_threads,
            layout=layout,
        )
    finally:  # only while detecting: a caller in the same process gets its own handler back
        signal.signal(signal.SIGTERM, previous)
    print(summary.text(Path(args.root)))
    return 130 if summary.interrupted else 0


def _add_detect(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("detect", help="detect faces with MTCNN and write ROOT/faces.csv (resumable)")
    p.add_argument("root", help="data root holding train/ [val/] test/ with one folder per class")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch-size", type=int, default=16, help="images of one size per MTCNN call (default 16)")
    p.add_argument(
        "--policy",
        choices=("confidence", "largest"),
        default="confidence",
        help="which face an image keeps when MTCNN finds several (default: most confident)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="minimum MTCNN confidence for a face (default 0.9); below it: no face",
    )
    p.add_argument("--min-face-size", type=int, default=20, help="smallest face searched, pixels (default 20)")
    p.add_argument(
        "--flush-every",
        type=int,
        default=500,
        help="save faces.csv every N images (and every minute); a kill loses at most these",
    )
    p.add_argument("--read-threads", type=int, default=2, help="threads decoding images ahead (default 2)")
    p.add_argument("--redo", action="store_true", help="detect every image again, ignoring faces.csv")
    p.set_defaults(func=_detect)


def _import(args: argparse.Namespace) -> int:
    from glamor_lightning.data.importers import import_boxes

    report = import_boxes(args.root, args.format, args.sources, keep_existing=not args.replace)
    print(report.text(Path(args.root)))
    return 0


def _add_import(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("import", help="turn face boxes you already have into ROOT/faces.csv")
    p.add_argument("root", help="data root holding train/ [val/] test/ with one folder per class")
    p.add_argument(
        "--format",
        required=True,
        choices=("glamor-txt", "csv"),
        help="glamor-txt: DIR/<split>/<Class>/<name>.txt with x1,y1,x2,y2 (0,0,0,0 = no face); "
        "csv: lines relpath,label,x1,y1,x2,y2",
    )
    p.add_argument("sources", nargs="+", metavar="DIR|FILE", help="the box folder, or the CSV files")
    p.add_argument(
        "--replace",
        action="store_true",
        help="drop the rows of an earlier faces.csv instead of keeping those the import lacks",
    )
    p.set_defaults(func=_import)


def _cache(args: argparse.Namespace) -> int:
    from glamor_lightning.data.cache import CacheSpec, ensure_cache
    from glamor_lightning.data.detect import ERRORS_NAME
    from glamor_lightning.data.index import INDEX_NAME, read_index
    from glamor_lightning.data.layout import scan_root
    from glamor_lightning.data.splits import check_folders

    root = Path(args.root)
    rows = read_index(root / INDEX_NAME)
    check_folders(rows, str(root / INDEX_NAME))
    uncovered = len(scan_root(root)) - len(rows)
    if uncovered > 0:
        print(
            f"note: {uncovered:,} images of {root} have no row in faces.csv and stay out of the cache "
            f"(unreadable ones are listed in {root / ERRORS_NAME}; if detection was interrupted, run "
            f"`glamor prepare detect {root}` first)"
        )
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    spec = CacheSpec(mask_face=not args.context_visible)
    started = time.perf_counter()
    cache = ensure_cache(root, rows, spec, cache_dir, workers=args.workers, progress=True)
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in cache.path.iterdir())
    per_1000 = 1000 * seconds / max(1, len(rows))
    how = "reused" if cache.reused else f"built in {seconds:.1f} s ({per_1000:.1f} s per 1,000 images)"
    print(f"cache {cache.path}: {len(cache):,} rows, {size / 2**20:,.1f} MiB, {how}")
    if cache.errors:
        print(f"{len(cache.errors):,} unreadable images (left out of training):")
        print("\n".join(f"  {reason}" for reason in list(cache.errors.values())[:10]))
    return 0


def _add_cache(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("cache", help="build the packed cache (face crops, masked contexts) of a root")
    p.add_argument("root", help="data root with a faces.csv")
    p.add_argument("--workers", type=int, default=2, help="processes rendering crops (default 2; 0 = none)")
    p.add_argument("--cache-dir", default=None, help="where caches live (default ROOT/.cache, as data.cache_dir)")
    p.add_argument(
        "--context-visible",
        action="store_true",
        help="the cache with the face left visible in the context (inputs=context_visible)",
    )
    p.set_defaults(func=_cache)


def _ncaer(args: argparse.Namespace) -> int:
    from glamor_lightning.data.ncaer import build_ncaer

    report = build_ncaer(
        args.caer_root,
        args.out,
        segment_seconds=args.segment_seconds,
        seed=args.seed,
        balance=not args.no_balance,
        workers=args.workers,
    )
    print(report.text(Path(args.out)))
    return 0


def _add_ncaer(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser("ncaer", help="build NCAER-S from the CAER videos (train/ validation/ test/)")
    p.add_argument("caer_root", help="CAER folder holding train/ validation/ test/ with class folders of videos")
    p.add_argument("out", help="output root, e.g. data/NCAER-S")
    p.add_argument("--segment-seconds", type=float, default=2.0, help="length of a part (default 2 s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame choice and the balancing (default 0)")
    p.add_argument("--no-balance", action="store_true", help="keep every frame (classes not balanced)")
    p.add_argument("--workers", type=int, default=2, help="processes decoding videos (default 2; 0 = none)")
    p.set_defaults(func=_ncaer)


#: every `prepare` step; other modules' steps are appended here
STEPS = [_add_synth, _add_scan, _add_detect, _add_import, _add_cache, _add_ncaer]


def register(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser("prepare", help="make or index a data set")
    steps = prepare.add_subparsers(dest="step", required=True, metavar="STEP")
    for add in STEPS:
        add(steps)
