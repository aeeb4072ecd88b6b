"""`glamor predict --ckpt CKPT IMAGE_OR_DIR... --out DIR`: emotions of every face in your own photos.

Per input image, OUT gets `<name>.png` (boxes, labels, probabilities drawn) and `<name>.json`
(`faces`: box, MTCNN score, label, probability, per-class probabilities; an image with no face has
`faces: []` and a `message`; an unreadable file has an `error`). `--attention` adds, per face,
`<name>_face<i>.png` (original with the box, masked context, attention overlay) and the three panels
as separate files.
"""
from __future__ import annotations

import argparse
import sys


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _predict(args: argparse.Namespace) -> int:
    from glamor_lightning.predict import Predictor, expand_inputs, predict_files

    files = expand_inputs(args.inputs, recursive=args.recursive)
    if not files:
        raise FileNotFoundError(f"no image files in {', '.join(args.inputs)}")
    predictor = Predictor.from_checkpoint(args.ckpt, device=_device(args.device), threshold=args.threshold,
                                          min_face_size=args.min_face_size)
    results = predict_files(predictor, files, args.out, attention=args.attention)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"glamor predict: skipped {r.error}", file=sys.stderr)
        elif not r.faces:
            print(f"{r.path}: no face found -> {r.json_path}")
        else:
            found = ", ".join(f"{f.label} {f.probability:.2f}" for f in r.faces)
            print(f"{r.path}: {len(r.faces)} face(s): {found} -> {r.image_path}")
    print(f"{len(results) - failed} image(s) predicted, {failed} unreadable; results in {args.out}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="detect every face in images and predict each person's emotion",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--ckpt", required=True, help="a checkpoint trained by glamor_lightning.train")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.9, help="minimum MTCNN face confidence (default 0.9)")
    p.add_argument("--min-face-size", type=int, default=20, help="smallest face to look for, pixels (default 20)")
    p.add_argument("--attention", action="store_true", help="also write an attention figure per face")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.set_defaults(func=_predict)
