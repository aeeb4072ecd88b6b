"""`glamor predict --ckpt CKPT IMAGE_OR_DIR... --out DIR`: emotions of every face in your own photos.

Per input image, OUT gets `<name>.png` (boxes and labels `#1 Happy 0.93` drawn) and `<name>.json`
(`faces`, most confident first: number (the `#k` on the image), box, MTCNN score, label, probability,
per-class probabilities; an image with no face, or smaller than --min-face-size, has `faces: []` and a
`message`; an unreadable file has an `error`). `--attention` adds, per face k, `<name>_face<k>.png`
(original with the box, masked context, attention overlay with its colour scale) and the three panels
as separate files.
"""

from __future__ import annotations

import argparse
import sys

from glamor_lightning.arguments import output_folder, positive_int, probability


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _predict(args: argparse.Namespace) -> int:
    from glamor_lightning.predict import Predictor
    from glamor_lightning.predict_files import expand_inputs, predict_files

    files = expand_inputs(args.inputs, recursive=args.recursive)
    if not files:
        raise FileNotFoundError(f"no image files in {', '.join(args.inputs)}")
    predictor = Predictor.from_checkpoint(
        args.ckpt, device=_device(args.device), threshold=args.threshold, min_face_size=args.min_face_size
    )
    results = predict_files(predictor, files, args.out, attention=args.attention)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"glamor predict: skipped {r.error}", file=sys.stderr)
        elif not r.faces:
            print(f"{r.path}: {r.message} -> {r.json_path}")
        else:
            found = ", ".join(f"#{k} {f.label} {f.probability:.2f}" for k, f in enumerate(r.faces, start=1))
            print(f"{r.path}: {len(r.faces)} face(s): {found} -> {r.image_path}")
    print(f"{len(results) - failed} image(s) predicted, {failed} unreadable; results in {args.out}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect every face in images and predict each person's emotion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument(
        "--threshold", type=probability, default=0.9, help="minimum MTCNN face confidence, in (0, 1] (default 0.9)"
    )
    p.add_argument(
        "--min-face-size",
        type=positive_int,
        default=20,
        help="smallest face to look for, pixels, at least 1 (default 20)",
    )
    p.add_argument("--attention", action="store_true", help="also write an attention figure per face")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.set_defaults(func=_predict)
