"""In-the-wild prediction: every face of a photo, each classified from its face and its own context.

    from glamor_lightning.predict import Predictor
    predictor = Predictor.from_checkpoint("model.ckpt", device="cpu", threshold=0.9)
    for face in predictor.predict("photo.jpg"):          # or an HxWx3 uint8 RGB array
        print(face.box, face.label, face.probability)

For each face MTCNN finds (confidence ≥ `threshold`), the model sees the face crop (box crop as in
training) and the whole image with *that* face's box set to zero (the other faces stay visible), resized
to the context size and centre-cropped — exactly the test-time inputs of the data module. Every size, the
masking and the class names come from the checkpoint's data contract (`module.data_contract`; by default
face 96×96, context 128×171, crop 112×112, face masked). All faces of one image go through the model
as one batch. The files `glamor predict` writes (JSON, annotated PNG, attention figures) are made in
`glamor_lightning.predict_files`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from glamor_lightning.annotate import annotate  # noqa: F401  (re-exported: where it used to live)
from glamor_lightning.data.geometry import face_crop, masked_context
from glamor_lightning.data.images import read_rgb
from glamor_lightning.data.transforms import PairTransform
from glamor_lightning.models.encoders import set_hardtanh_inplace
from glamor_lightning.models.fold import fold_batchnorm
from glamor_lightning.models.glamor import GlamorOutput
from glamor_lightning.module import to_float_nchw

Box = tuple[float, float, float, float]

#: longest side, in pixels, MTCNN searches a photo at when predicting (larger ones are shrunk for detection,
#: boxes mapped back): chosen by `make bench` (benchmarks/detection.py, `bounds`): of the bounds whose boxes
#: stay within 8 px of full resolution's on the test photos (tests/predict/test_detect_bound.py; 480 moved
#: the top edge of mirrored heads by up to 10 px), the fastest. Change it here; `glamor predict
#: --detect-max-side` defaults to it.
DETECT_MAX_SIDE = 512
#: the same for video frames (`Predictor.predict_video`, `glamor predict` on videos): lower, since a video's
#: frames are many and its faces rarely small: on 640×360 frames with five faces, 480 took 0.7× the
#: detection time of full resolution, with the same faces and boxes within 4 px (make bench, docs/video.md)
VIDEO_DETECT_MAX_SIDE = 480


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
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 6),
            "label": self.label,
            "probability": round(float(self.probability), 6),
            "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
        }


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
        threshold: minimum MTCNN confidence of a face, in (0, 1].
        min_face_size: smallest face MTCNN looks for, in pixels of the image it searches (≥ 1; a smaller
            image has no face).
        detect_max_side: longest side MTCNN searches an image at (`FaceDetector.max_side`): a larger photo
            or frame is shrunk for detection (faster) and the boxes mapped back, so its smallest face found
            grows by the ratio (`FaceDetector.smallest_face`). None or 0: full resolution.
        detector: a ready `FaceDetector` (else one is made; then the three settings above are its own).
        video_detect_max_side: the same for video frames (`video_detector`: the same MTCNN at this bound).
    """

    def __init__(
        self,
        module,
        device: str | torch.device = "cpu",
        threshold: float = 0.9,
        min_face_size: int = 20,
        detector=None,
        detect_max_side: int | None = DETECT_MAX_SIDE,
        video_detect_max_side: int | None = VIDEO_DETECT_MAX_SIDE,
    ) -> None:
        from glamor_lightning.data.mtcnn import FaceDetector

        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        #: the model's inputs: sizes, masking and class names (`glamor_lightning.data.contract`)
        self.contract = module.data_contract
        #: what `forward` runs: a copy of the module's net with its batch norms folded into the convolutions
        #: (`glamor_lightning.models.fold`; the same outputs, checked), in channels-last memory format whatever
        #: the model was trained in (faster for one face and for several: make bench, `fold_ms`); the module
        #: itself is not changed. Its ReLU6 (timm's) run in place again: without autograd nothing is cloned, and
        #: MobileNetV2's folded net then classified one face in 9.6 ms against 10.2, five in 22.7 against 24.3
        #: (AMX machine, one-off timing; training runs them out of place: `encoders.set_hardtanh_inplace`)
        self.net = fold_batchnorm(module.net, *self._example_inputs()).net.to(memory_format=torch.channels_last)
        set_hardtanh_inplace(self.net, True)
        self.classes = list(self.contract.class_names)
        self.detector = detector or FaceDetector(
            device=self.device, threshold=threshold, min_face_size=min_face_size, max_side=detect_max_side or None
        )
        #: the detector of video frames: `detector` at `video_detect_max_side`
        self.video_detector = self.detector.bounded(video_detect_max_side or None)
        self._transform = PairTransform(train=False, crop_size=self.contract.crop_size)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        threshold: float = 0.9,
        min_face_size: int = 20,
        detect_max_side: int | None = DETECT_MAX_SIDE,
        video_detect_max_side: int | None = VIDEO_DETECT_MAX_SIDE,
    ) -> Predictor:
        """Load a checkpoint safely (weights only, see `glamor_lightning.checkpoints`)."""
        from glamor_lightning.checkpoints import load_module

        return cls(
            load_module(path, map_location="cpu"),
            device=device,
            threshold=threshold,
            min_face_size=min_face_size,
            detect_max_side=detect_max_side,
            video_detect_max_side=video_detect_max_side,
        )

    @property
    def threshold(self) -> float:
        """The minimum MTCNN confidence of a face."""
        return self.detector.threshold

    @property
    def min_face_size(self) -> int:
        """The smallest face MTCNN looks for, in pixels of the image it searches (see `detect_max_side`)."""
        return self.detector.min_face_size

    @property
    def detect_max_side(self) -> int | None:
        """The longest side MTCNN searches an image at (None: full resolution)."""
        return self.detector.max_side

    @property
    def video_detect_max_side(self) -> int | None:
        """The longest side MTCNN searches a video frame at (None: full resolution)."""
        return self.video_detector.max_side

    def _example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two faces' float NCHW inputs of the contract's sizes (seeded noise): what folding is checked on."""
        c, g = self.contract, torch.Generator().manual_seed(0)
        faces = torch.randint(0, 256, (2, c.face_size, c.face_size, 3), dtype=torch.uint8, generator=g)
        contexts = torch.randint(0, 256, (2, c.crop_size, c.crop_size, 3), dtype=torch.uint8, generator=g)
        return self._net_inputs(faces, contexts)

    def _net_inputs(self, faces: torch.Tensor, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC batches as the net takes them: float, NCHW in shape, channels-last in memory."""
        return to_float_nchw(faces.to(self.device), True), to_float_nchw(contexts.to(self.device), True)

    @torch.no_grad()
    def forward(self, faces: torch.Tensor, contexts: torch.Tensor) -> GlamorOutput:
        """The model's output for uint8 NHWC batches of faces and contexts (`model_inputs`): what
        `self.module(faces, contexts)` gives, from the folded net."""
        return self.net(*self._net_inputs(faces, contexts))

    def face_inputs(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """What the model sees of the face at `box` of an RGB uint8 image: the face crop (face_size²) and
        the image with that box zeroed (when the contract masks it), resized to context_size and
        centre-cropped (crop_size²); both HxWx3 uint8."""
        c = self.contract
        return self._transform(
            face_crop(image, box, size=c.face_size),
            masked_context(image, box, size_hw=c.context_size, mask=c.mask_face),
            0,
        )

    def model_inputs(self, image: np.ndarray, boxes: Sequence[Box]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC batches (faces, contexts: `face_inputs` of each box) of the faces `boxes` of one image."""
        faces, contexts = zip(*(self.face_inputs(image, box) for box in boxes))
        return torch.from_numpy(np.stack(faces)), torch.from_numpy(np.stack(contexts))

    @torch.no_grad()
    def classify(
        self, image: np.ndarray, boxes: Sequence[Box], scores: Sequence[float] | None = None, attention: bool = False
    ) -> list[FacePrediction]:
        """Predict the faces at `boxes` (known boxes, no detection) of an RGB uint8 image, in one batch."""
        if not len(boxes):
            return []
        image = as_rgb_uint8(image)
        faces, contexts = self.model_inputs(image, boxes)
        out = self.forward(faces, contexts)
        probs = out.logits.float().softmax(1).cpu().numpy()
        attn = out.attention.float().cpu().numpy()
        scores = list(scores) if scores is not None else [float("nan")] * len(boxes)
        preds = []
        for i, box in enumerate(boxes):
            k = int(probs[i].argmax())
            preds.append(
                FacePrediction(
                    box=tuple(float(v) for v in box),
                    score=float(scores[i]),
                    label=self.classes[k],
                    probability=float(probs[i, k]),
                    probabilities=dict(zip(self.classes, map(float, probs[i]))),
                    attention=attn[i] if attention else None,
                )
            )
        return preds

    def predict(self, image: np.ndarray | str | os.PathLike, attention: bool = False) -> list[FacePrediction]:
        """All faces of one image (a path or an HxWx3 uint8 RGB array), most confident first."""
        return self.predict_many([image], attention=attention)[0]

    def predict_video(
        self,
        path: str | os.PathLike,
        stride: int | None = None,
        fps: float | None = None,
        smoothing: str = "ema:0.5",
        memory_s: float = 2.0,
        batch_frames: int = 8,
    ):
        """Every face of a video, tracked: a `glamor_lightning.video.VideoStream` to iterate, one
        `FrameResult` (frame index, time, tracked faces with smoothed and raw probabilities) per sampled
        frame: every `stride`-th frame, or `fps` frames per second (default every frame). It streams (holds
        at most `batch_frames` frames); `smoothing` is `ema:ALPHA`, `window:N` or `off`; a face away for at
        most `memory_s` seconds keeps its track id. See docs/video.md."""
        from glamor_lightning.video import Sampling, Smoothing, VideoStream

        sampling = Sampling(stride=stride, fps=fps)
        return VideoStream(self, path, sampling, Smoothing.parse(smoothing), memory_s, batch_frames)

    def predict_many(
        self, images: Sequence[np.ndarray | str | os.PathLike], attention: bool = False
    ) -> list[list[FacePrediction]]:
        """`predict` for several images (MTCNN batches images of one size)."""
        arrays = [as_rgb_uint8(im) for im in images]
        detections = self.detector.detect(arrays)
        return [
            self.classify(im, [d.box for d in dets], [d.score for d in dets], attention=attention)
            for im, dets in zip(arrays, detections)
        ]
