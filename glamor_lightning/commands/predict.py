"""`glamor predict --ckpt CKPT INPUT... --out DIR`: emotions of every face in your own photos and videos.

Per input image, OUT gets `<name>.png` (boxes and labels `#1 Happy 0.93` drawn) and `<name>.json`
(`faces`, most confident first: number (the `#k` on the image), box, MTCNN score, label, probability,
per-class probabilities; an image with no face, or smaller than --min-face-size, has `faces: []` and a
`message`; an unreadable file has an `error`). `--attention` adds, per face k, `<name>_face<k>.png`
(original with the box, masked context, attention overlay with its colour scale) and the three panels
as separate files.

Videos (by extension: .avi .mp4 .mkv .mov .mpg .mpeg .m4v .webm, or by content) are streamed: every
--stride N-th frame (or --fps F per second) is read, faces are tracked (ByteTrack) and classified with
their own context, probabilities smoothed per track (--smoothing). Per video, OUT gets `<name>.csv` (one
row per frame and face), `<name>.json` (per track and clip summaries) and `<name>_annotated.mp4` (boxes,
track ids, smoothed labels). See docs/video.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glamor_lightning.arguments import output_folder, positive_float, positive_int, probability


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def smoothing_spec(text: str) -> str:
    from glamor_lightning.video.smoothing import Smoothing

    try:
        Smoothing.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def detect_max_side(text: str) -> int:
    """0 (full resolution) or a longest side of at least 12 pixels (MTCNN's smallest window)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 0 (full resolution) or a whole number of at least 12, got {text!r}"
        ) from None
    if value != 0 and value < 12:
        raise argparse.ArgumentTypeError(f"must be 0 (full resolution) or at least 12 pixels, got {value}")
    return value


def _report_image(r) -> None:
    if r.error:
        print(f"glamor predict: skipped {r.error}", file=sys.stderr)
    elif not r.faces:
        print(f"{r.path}: {r.message} -> {r.json_path}")
    else:
        found = ", ".join(f"#{k} {f.label} {f.probability:.2f}" for k, f in enumerate(r.faces, start=1))
        print(f"{r.path}: {len(r.faces)} face(s): {found} -> {r.image_path}")


def _predict(args: argparse.Namespace) -> int:
    from glamor_lightning.predict import DETECT_MAX_SIDE, VIDEO_DETECT_MAX_SIDE, Predictor
    from glamor_lightning.predict_files import output_names, predict_image
    from glamor_lightning.video.inputs import split_inputs
    from glamor_lightning.video.outputs import predict_video_file
    from glamor_lightning.video.reader import Sampling
    from glamor_lightning.video.smoothing import Smoothing

    max_side = DETECT_MAX_SIDE if args.detect_max_side is None else args.detect_max_side
    video_max_side = VIDEO_DETECT_MAX_SIDE if args.detect_max_side is None else args.detect_max_side
    if max_side and max_side < args.min_face_size:
        raise ValueError(
            f"--detect-max-side {max_side} is below --min-face-size {args.min_face_size}: "
            "no face would fit; raise it or give 0 (full resolution)"
        )
    images, videos = split_inputs(args.inputs, recursive=args.recursive)
    if not images and not videos:
        raise FileNotFoundError(f"no image or video files in {', '.join(args.inputs)}")
    predictor = Predictor.from_checkpoint(
        args.ckpt,
        device=_device(args.device),
        threshold=args.threshold,
        min_face_size=args.min_face_size,
        detect_max_side=max_side,
        video_detect_max_side=video_max_side,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names([*images, *videos])  # one name space: photo.jpg and photo.avi do not collide
    images_failed = videos_failed = 0
    for path, name in zip(images, names):
        r = predict_image(predictor, path, out, name, args.attention)
        images_failed += bool(r.error)
        _report_image(r)
    sampling = Sampling(stride=args.stride, fps=args.fps) if (args.stride or args.fps) else Sampling()
    for path, name in zip(videos, names[len(images) :]):
        r = predict_video_file(
            predictor,
            path,
            out,
            name,
            sampling,
            Smoothing.parse(args.smoothing),
            memory_s=args.track_memory,
            batch_frames=args.batch_frames,
            progress=not args.no_progress,
        )
        videos_failed += bool(r.error)
        print(r.line(), file=sys.stderr if r.error else sys.stdout)
    failed = images_failed + videos_failed
    done = f"{len(images) - images_failed} image(s)"
    if videos:
        done += f" and {len(videos) - videos_failed} video(s)"
    print(f"{done} predicted, {failed} unreadable; results in {args.out}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect every face in images and videos and predict each person's emotion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files and/or folders of them")
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument(
        "--threshold", type=probability, default=0.9, help="minimum MTCNN face confidence, in (0, 1] (default 0.9)"
    )
    p.add_argument(
        "--min-face-size",
        type=positive_int,
        default=20,
        help="smallest face to look for, in pixels of the image searched (see --detect-max-side), at least 1; "
        "default 20",
    )
    p.add_argument(
        "--detect-max-side",
        type=detect_max_side,
        metavar="N",
        help="look for faces in photos and video frames whose longest side exceeds N pixels in a copy shrunk to "
        "N, boxes mapped back (0: full resolution; default: DETECT_MAX_SIDE for photos and "
        "VIDEO_DETECT_MAX_SIDE for videos, in glamor_lightning/predict.py, chosen by `make bench`). Trades the "
        "smallest face found for speed: MTCNN's cost grows with the pixels searched, and --min-face-size counts "
        "in the shrunk copy, so at N=640 a 1920-wide photo's smallest face is 60 px",
    )
    p.add_argument("--attention", action="store_true", help="also write an attention figure per face (images)")
    p.add_argument("--recursive", action="store_true", help="look for images and videos in sub-folders too")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    video = p.add_argument_group("videos")
    rate = video.add_mutually_exclusive_group()
    rate.add_argument("--stride", type=positive_int, help="read every N-th frame (default: every frame)")
    rate.add_argument("--fps", type=positive_float, help="read F frames per second, by the video's timestamps")
    video.add_argument(
        "--smoothing",
        type=smoothing_spec,
        default="ema:0.5",
        help="per-track smoothing: ema:ALPHA (0 < ALPHA <= 1), window:N or off (default ema:0.5)",
    )
    video.add_argument(
        "--track-memory",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="a face away for at most this long keeps its track id (default 2)",
    )
    video.add_argument("--batch-frames", type=positive_int, default=8, help="frames detected and classified together")
    video.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)
