"""The files of `glamor predict`: per input image `<name>.json`, `<name>.png` (annotated) and, on request,
an attention figure per face.

One job per function: `expand_inputs` (which files), `output_names` (one file name per input),
`image_record` (the JSON), `write_annotated` (the PNG), `write_face_figures` (attention figures), and
`predict_files`, which runs them over the inputs (a file that cannot be read gets a JSON with an `error`;
the others go on).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from glamor_lightning.annotate import annotate
from glamor_lightning.data.images import is_image_name, read_rgb
from glamor_lightning.predict import FacePrediction, Predictor

#: how the faces of an image are ordered, in its JSON and as numbered on its annotated image
FACE_ORDER = "most confident (MTCNN score) first; face `number` k is faces[k-1] and is drawn as #k"


def expand_inputs(items: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files as given, and the image files of directories (sorted); a missing path raises."""
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            files += sorted(f for f in found if f.is_file() and is_image_name(f.name))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def output_names(files: Sequence[Path]) -> list[str]:
    """One output stem per input: its own stem, or `<stem>_<k>` for a second input of that name (two
    folders may hold `photo.jpg`)."""
    used: set[str] = set()
    names = []
    for path in files:
        name, k = path.stem, 1
        while name in used:
            name, k = f"{path.stem}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


@dataclass
class ImageResult:
    """What `predict_files` did with one input file."""

    path: Path
    json_path: Path
    image_path: Path | None
    faces: list[FacePrediction]
    error: str | None = None
    message: str | None = None


def no_face_message(predictor: Predictor, image: np.ndarray) -> str:
    """Why an image has no face: too small to hold one of `min_face_size`, or none found confidently."""
    h, w = image.shape[:2]
    if not predictor.detector.searchable(image):
        sh, sw = predictor.detector.searched_size(h, w)
        if (sh, sw) != (h, w):
            return (
                f"no face: the image ({w}x{h} pixels) is searched at {sw}x{sh} (--detect-max-side "
                f"{predictor.detect_max_side}), smaller than the smallest face looked for (--min-face-size "
                f"{predictor.min_face_size}); set --detect-max-side 0 or lower --min-face-size to search it"
            )
        return (
            f"no face: the image ({w}x{h} pixels) is smaller than the smallest face looked for "
            f"(--min-face-size {predictor.min_face_size}); lower --min-face-size to search it"
        )
    return f"no face found (MTCNN confidence threshold {predictor.threshold})"


def image_record(path: Path, image: np.ndarray, predictor: Predictor, faces: Sequence[FacePrediction]) -> dict:
    """The JSON of one image: its size, the detector settings and its faces, numbered from 1 in `FACE_ORDER`."""
    record = {
        "image": str(path),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "threshold": predictor.threshold,
        "min_face_size": predictor.min_face_size,
        "detect_max_side": predictor.detect_max_side,
        "order": FACE_ORDER,
        "faces": [{"number": k, **f.to_dict()} for k, f in enumerate(faces, start=1)],
    }
    if not faces:
        record["message"] = no_face_message(predictor, image)
    return record


def write_annotated(path: Path, image: np.ndarray, faces: Sequence[FacePrediction]) -> Path:
    """The RGB image with numbered boxes and labels (`annotate`), as a PNG."""
    if not cv2.imwrite(str(path), cv2.cvtColor(annotate(image, faces), cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"could not write {path}")
    return path


def write_face_figures(
    predictor: Predictor, image: np.ndarray, faces: Sequence[FacePrediction], out_dir: Path, name: str
) -> list[dict]:
    """Per face k (from 1), `<name>_face<k>.png` and its panels: the photo with the box, the masked context
    the model saw (`Predictor.face_inputs`) and the attention over it. Returns, per face, the JSON keys
    `attention_figure` and `attention_uniform`."""
    from glamor_lightning.analysis.attention_maps import draw_box, is_uniform, write_triplet

    keys = []
    for k, f in enumerate(faces, start=1):
        if f.attention is None:
            raise ValueError("write_face_figures needs predictions made with attention=True")
        _, context = predictor.face_inputs(image, f.box)
        files = write_triplet(
            out_dir,
            f"{name}_face{k}",
            draw_box(image, f.box),
            context,
            f.attention,
            title=f"face #{k}: {f.label} {f.probability:.2f}",
        )
        keys.append({"attention_figure": files["panels"].name, "attention_uniform": is_uniform(f.attention)})
    return keys


def predict_image(predictor: Predictor, path: Path, out_dir: Path, name: str, attention: bool) -> ImageResult:
    """Read, predict and write one input file (see `predict_files`)."""
    from glamor_lightning.data.images import BadImageError

    json_path = out_dir / f"{name}.json"
    try:
        image = read_rgb(path)
    except BadImageError as err:
        json_path.write_text(json.dumps({"image": str(path), "error": str(err), "faces": []}, indent=2))
        return ImageResult(path, json_path, None, [], error=str(err))
    faces = predictor.predict(image, attention=attention)
    record = image_record(path, image, predictor, faces)
    image_path = write_annotated(out_dir / f"{name}.png", image, faces)
    if attention:
        for face, keys in zip(record["faces"], write_face_figures(predictor, image, faces, out_dir, name)):
            face.update(keys)
    json_path.write_text(json.dumps(record, indent=2))
    return ImageResult(path, json_path, image_path, faces, message=record.get("message"))


def predict_files(
    predictor: Predictor, files: Sequence[Path], out_dir: str | os.PathLike, attention: bool = False
) -> list[ImageResult]:
    """Predict every file; write `<name>.png` (annotated) and `<name>.json` per image into `out_dir`
    (and `<name>_face<k>*.png` attention figures on request). An unreadable file gets a JSON with an
    `error` and no PNG; the others go on."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is an existing file, not a folder: give a folder to write the results into")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [predict_image(predictor, path, out_dir, name, attention) for path, name in zip(files, output_names(files))]
