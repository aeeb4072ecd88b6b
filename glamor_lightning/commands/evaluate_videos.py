"""`glamor evaluate-videos --ckpt C CAER_ROOT [--split test] [--frames-per-clip K | --segment-seconds S]`:
clip-level accuracy on the CAER videos, comparable with the CAER paper's video results.

Each clip's main person (its longest face track) is read on K evenly spread frames (default 10) or one
frame per part of about S seconds; the clip's prediction is the argmax of the mean of those frames'
probabilities. OUT gets predictions.csv (for `glamor compare`), frames.csv and summary.json; clip
accuracy, frame accuracy and per-class accuracy are printed. See docs/video.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glamor_lightning.arguments import output_folder, positive_float, positive_int, probability


def _evaluate(args: argparse.Namespace) -> int:
    from glamor_lightning.commands.predict import _device
    from glamor_lightning.predict import Predictor
    from glamor_lightning.video.evaluate import evaluate_videos

    predictor = Predictor.from_checkpoint(
        args.ckpt, device=_device(args.device), threshold=args.threshold, min_face_size=args.min_face_size
    )
    result = evaluate_videos(
        predictor,
        args.root,
        split=args.split,
        frames_per_clip=args.frames_per_clip,
        segment_seconds=args.segment_seconds,
        batch_frames=args.batch_frames,
        progress=not args.no_progress,
    )
    out = Path(args.out or f"video_eval_{args.split}")
    files = result.write(out)
    print(result.text())
    print(f"written: {', '.join(str(p) for p in files.values())}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate-videos",
        help="clip-level accuracy on CAER videos (main person, mean of frame probabilities)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", metavar="CAER_ROOT", help="folder with train/, validation/ and/or test/ of <Class>/*.avi")
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--split", default="test", choices=["train", "validation", "val", "test"], help="default test")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--frames-per-clip", type=positive_int, metavar="K", help="K evenly spread frames (default 10)")
    how.add_argument("--segment-seconds", type=positive_float, metavar="S", help="one frame per part of about S s")
    p.add_argument("--out", type=output_folder, help="output folder (default ./video_eval_<split>)")
    p.add_argument("--threshold", type=probability, default=0.9, help="minimum MTCNN face confidence (default 0.9)")
    p.add_argument("--min-face-size", type=positive_int, default=20, help="smallest face, pixels (default 20)")
    p.add_argument("--batch-frames", type=positive_int, default=8, help="frames detected and classified together")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)
