"""In-the-wild prediction: every face of a photo, each classified from its face and its own context.

    from glamor_lightning.predict import Predictor
    predictor = Predictor.from_checkpoint("model.ckpt", device="cpu", threshold=0.9)
    for face in predictor.predict("photo.jpg"):          # or an HxWx3 uint8 RGB array
        print(face.box, face.label, face.probability)

For each face MTCNN finds (confidence ≥ `threshold`), the model sees the face crop (96×96, box crop
as in training) and the whole image with *that* face's box set to zero (the other faces stay visible),
resized to 128×171 and centre-cropped to 112×112 — exactly the test-time inputs of the data module.
All faces of one image go through the model as one batch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from glamor_lightning.data.geometry import face_crop, masked_context
from glamor_lightning.data.images import is_image_name, read_rgb
from glamor_lightning.data.transforms import PairTransform

Box = tuple[float, float, float, float]


@dataclass
class FacePrediction:
    """One face: its box (x1, y1, x2, y2, pixels of the image), detector confidence, the predicted
    class with its probability, every class's probability, and (on request) the context attention map."""

    box: Box
    score: float
    label: str
    probability: float
    probabilities: dict[str, float]
    attention: np.ndarray | None = field(default=None, repr=False)  #: [h, w], sums to 1

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 6),
                "label": self.label, "probability": round(float(self.probability), 6),
                "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()}}


def as_rgb_uint8(image: np.ndarray | str | os.PathLike) -> np.ndarray:
    """An image path or array as HxWx3 uint8 RGB (grey is stacked, an alpha channel dropped)."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


class Predictor:
    """Face detection (MTCNN) + an `EmotionModule`, on one device.

    Args:
        module: a trained `EmotionModule` (put in eval mode here).
        device: where the model and MTCNN run.
        threshold: minimum MTCNN confidence of a face.
        min_face_size: smallest face MTCNN looks for, in pixels.
        detector: a ready `FaceDetector` (else one is made).
    """

    def __init__(self, module, device: str | torch.device = "cpu", threshold: float = 0.9,
                 min_face_size: int = 20, detector=None) -> None:
        from glamor_lightning.data.mtcnn import FaceDetector

        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.classes = list(module.class_names)
        self.detector = detector or FaceDetector(device=self.device, threshold=threshold,
                                                 min_face_size=min_face_size)
        self._transform = PairTransform(train=False)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", threshold: float = 0.9,
                        min_face_size: int = 20) -> "Predictor":
        """Load a checkpoint safely (weights only, see `glamor_lightning.checkpoints`)."""
        from glamor_lightning.checkpoints import load_module

        return cls(load_module(path, map_location="cpu"), device=device, threshold=threshold,
                   min_face_size=min_face_size)

    @property
    def threshold(self) -> float:
        return self.detector.threshold

    def model_inputs(self, image: np.ndarray, boxes: Sequence[Box]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC batches (faces 96×96, contexts 112×112) of the faces `boxes` of one image."""
        mask = bool(getattr(self.module.net, "masks_face", True))
        faces, contexts = [], []
        for box in boxes:
            face, ctx = self._transform(face_crop(image, box), masked_context(image, box, mask=mask), 0)
            faces.append(face)
            contexts.append(ctx)
        return torch.from_numpy(np.stack(faces)), torch.from_numpy(np.stack(contexts))

    @torch.no_grad()
    def classify(self, image: np.ndarray, boxes: Sequence[Box], scores: Sequence[float] | None = None,
                 attention: bool = False) -> list[FacePrediction]:
        """Predict the faces at `boxes` (known boxes, no detection) of an RGB uint8 image, in one batch."""
        if not len(boxes):
            return []
        image = as_rgb_uint8(image)
        faces, contexts = self.model_inputs(image, boxes)
        out = self.module(faces.to(self.device), contexts.to(self.device))
        probs = out.logits.float().softmax(1).cpu().numpy()
        attn = out.attention.float().cpu().numpy()
        scores = list(scores) if scores is not None else [float("nan")] * len(boxes)
        preds = []
        for i, box in enumerate(boxes):
            k = int(probs[i].argmax())
            preds.append(FacePrediction(
                box=tuple(float(v) for v in box), score=float(scores[i]), label=self.classes[k],
                probability=float(probs[i, k]), probabilities=dict(zip(self.classes, map(float, probs[i]))),
                attention=attn[i] if attention else None))
        return preds

    def predict(self, image: np.ndarray | str | os.PathLike, attention: bool = False) -> list[FacePrediction]:
        """All faces of one image (a path or an HxWx3 uint8 RGB array), most confident first."""
        return self.predict_many([image], attention=attention)[0]

    def predict_many(self, images: Sequence[np.ndarray | str | os.PathLike],
                     attention: bool = False) -> list[list[FacePrediction]]:
        """`predict` for several images (MTCNN batches images of one size)."""
        arrays = [as_rgb_uint8(im) for im in images]
        detections = self.detector.detect(arrays)
        return [self.classify(im, [d.box for d in dets], [d.score for d in dets], attention=attention)
                for im, dets in zip(arrays, detections)]


# -- output files ---------------------------------------------------------------------------------
_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60)]


def annotate(image: np.ndarray, predictions: Sequence[FacePrediction]) -> np.ndarray:
    """A copy of the RGB image with each face's box and `label probability` drawn."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 700.0)
    thick = max(1, int(round(2 * scale)))
    for i, p in enumerate(predictions):
        colour = _COLOURS[i % len(_COLOURS)]
        x1, y1, x2, y2 = (int(round(v)) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = f"{p.label} {p.probability:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base), colour, -1)
        cv2.putText(out, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


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


@dataclass
class ImageResult:
    """What `predict_files` did with one input file."""

    path: Path
    json_path: Path
    image_path: Path | None
    faces: list[FacePrediction]
    error: str | None = None


def predict_files(predictor: Predictor, files: Sequence[Path], out_dir: str | os.PathLike,
                  attention: bool = False) -> list[ImageResult]:
    """Predict every file; write `<stem>.png` (annotated) and `<stem>.json` per image into `out_dir`
    (and `<stem>_face<i>*.png` attention figures on request). An unreadable file gets a JSON with an
    `error` and no PNG; the others go on."""
    from glamor_lightning.analysis.attention_maps import draw_box, write_triplet
    from glamor_lightning.data.images import BadImageError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results = []
    for path in files:
        name = path.stem
        k = 1
        while name in used:  # two inputs with the same name from different folders
            name, k = f"{path.stem}_{k}", k + 1
        used.add(name)
        record: dict = {"image": str(path)}
        json_path = out_dir / f"{name}.json"
        try:
            image = read_rgb(path)
        except BadImageError as err:
            record.update(error=str(err), faces=[])
            json_path.write_text(json.dumps(record, indent=2))
            results.append(ImageResult(path, json_path, None, [], str(err)))
            continue
        faces = predictor.predict(image, attention=attention)
        record.update(width=int(image.shape[1]), height=int(image.shape[0]), threshold=predictor.threshold,
                      faces=[f.to_dict() for f in faces])
        if not faces:
            record["message"] = f"no face found (MTCNN confidence threshold {predictor.threshold})"
        image_path = out_dir / f"{name}.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(annotate(image, faces), cv2.COLOR_RGB2BGR))
        if attention:
            mask = bool(getattr(predictor.module.net, "masks_face", True))
            for i, f in enumerate(faces):
                _, ctx = predictor._transform(face_crop(image, f.box), masked_context(image, f.box, mask=mask), 0)
                files_i = write_triplet(out_dir, f"{name}_face{i}", draw_box(image, f.box), ctx, f.attention,
                                        title=f"face {i}: {f.label} {f.probability:.2f}")
                record["faces"][i]["attention_figure"] = files_i["panels"].name
        json_path.write_text(json.dumps(record, indent=2))
        results.append(ImageResult(path, json_path, image_path, faces))
    return results
