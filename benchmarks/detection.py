"""Face detection throughput and prediction latency.

- Detection images/s: MTCNN (`data.mtcnn.FaceDetector`, as `glamor prepare detect` runs it) on
  same-size images of the benchmark root (SynthCAER: 320×180), one image per call versus all of them
  in one batched call.
- Prediction latency: `glamor_lightning.predict.Predictor.predict(image)` end to end (MTCNN, then the
  face crops and masked contexts of every face, then one model forward for all faces) on a
  1024×512 photo holding 1, 5 or 8 faces (256×256 tiles of skimage's astronaut on grey; the faces
  MTCNN finds are counted and reported). Untrained weights: the cost does not depend on them. The
  split into detection and classification (`Predictor.classify` with the boxes known) is reported
  per backbone.
- Detection bound: `glamor predict` searches a photo for faces at a longest side of at most
  `predict.DETECT_MAX_SIDE` (`FaceDetector(max_side=...)`). Latency, detection time and faces found
  are measured with that bound (keys `latency`, `detect`, `faces_found`: what `glamor predict` does)
  and at full resolution (`latency_full`, `detect_full`, `faces_found_full`), their repeats
  interleaved so machine load hits both alike; this is how DETECT_MAX_SIDE is chosen. The root images
  (320×180) are below the bound: their images/s are the same either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import Settings, log, make_module, measure, measure_interleaved
from glamor_lightning.data.images import read_rgb
from glamor_lightning.data.index import INDEX_NAME, read_index
from glamor_lightning.data.mtcnn import FaceDetector

FACE_COUNTS = (1, 5, 8)  # latency targets are set for 1 and 5 faces
TILE = 256
#: the detection bounds compared (time and boxes against full resolution) when choosing DETECT_MAX_SIDE
BOUND_CANDIDATES = (480, 512, 640)


def root_images(root: Path, n: int) -> list[np.ndarray]:
    """n images of the root that share the most common size."""
    rows = read_index(root / INDEX_NAME)
    images = [read_rgb(root / r.path) for r in rows[: max(4 * n, 32)]]
    shapes = [im.shape for im in images]
    common = max(set(shapes), key=shapes.count)
    same = [im for im in images if im.shape == common][:n]
    if len(same) < n:
        raise RuntimeError(f"{root}: fewer than {n} images of one size")
    return same


def faces_photo(n_faces: int) -> np.ndarray:
    """A 1024×512 RGB photo with `n_faces` astronaut tiles (of 8 places) on grey."""
    from skimage.data import astronaut

    tile = astronaut()[10 : 10 + TILE, 96 : 96 + TILE]  # her head and shoulders
    photo = np.full((2 * TILE, 4 * TILE, 3), 128, np.uint8)
    for k in range(n_faces):
        r, c = divmod(k, 4)
        photo[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
    return photo


def compare_bounds(full: FaceDetector, photos: dict[int, np.ndarray], s: Settings) -> dict:
    """For each bound of BOUND_CANDIDATES: MTCNN's time on each photo (interleaved with the other bounds) and
    how far its boxes are from full resolution's (the largest edge difference, pixels; faces counted)."""
    detectors = {b: full.bounded(b) for b in BOUND_CANDIDATES}
    out: dict = {str(b): {"detect": {}, "max_edge_px": 0.0, "same_faces": True} for b in BOUND_CANDIDATES}
    for k, photo in photos.items():
        expected = [d.box for d in full.detect([photo])[0]]
        times = measure_interleaved({str(b): lambda d=d, p=photo: d.detect([p]) for b, d in detectors.items()}, 1, s)
        for b, d in detectors.items():
            found = [f.box for f in d.detect([photo])[0]]
            cell = out[str(b)]
            cell["detect"][str(k)] = times[str(b)]
            cell["same_faces"] &= len(found) == len(expected)
            for e in expected:
                if found:
                    edge = min(float(np.abs(np.subtract(f, e)).max()) for f in found)
                    cell["max_edge_px"] = max(cell["max_edge_px"], edge)
    for b in BOUND_CANDIDATES:
        c = out[str(b)]
        log(
            f"detection bound {b}: "
            + ", ".join(f"{k} face(s) {_ms(t):.0f} ms" for k, t in c["detect"].items())
            + f"; boxes within {c['max_edge_px']:.1f} px of full resolution, same faces: {c['same_faces']}"
        )
    return out


def _ms(t) -> float:
    return 1000.0 / t.median


def run(root: Path, s: Settings, predict_backbone: str = "mobilenetv2") -> dict:
    from glamor_lightning.predict import DETECT_MAX_SIDE, Predictor

    detector = FaceDetector(device=s.device)  # full resolution, as `glamor prepare detect`
    bounded = detector.bounded(DETECT_MAX_SIDE)  # the same MTCNN, as `glamor predict` searches photos
    n = 2 if s.quick else 8
    images = root_images(root, n)
    one = measure(lambda: [detector.detect([im]) for im in images], n, s)
    batched = measure(lambda: detector.detect(images), n, s)
    found = [len(d) for d in detector.detect(images)]
    h, w = images[0].shape[:2]
    log(f"detection {w}x{h}: batch 1 {one.median:.1f} img/s, batch {n} {batched.median:.1f} img/s")
    out = {
        "image_size": [w, h],
        "batch": n,
        "batch1_ips": one,
        "batched_ips": batched,
        "faces_found_per_image": found,
        "latency": {},
        "faces_found": {},
        "classify": {},
        "detect": {},
        "detect_max_side": DETECT_MAX_SIDE,
        "latency_full": {},
        "faces_found_full": {},
        "detect_full": {},
        "fold": {},
    }

    photos = {k: faces_photo(k) for k in FACE_COUNTS}
    boxes = {}
    for k, photo in photos.items():
        dets = bounded.detect([photo])[0]
        boxes[k] = dets
        out["faces_found"][str(k)] = len(dets)
        out["faces_found_full"][str(k)] = len(detector.detect([photo])[0])
        for name, found_k in (("bounded", len(dets)), ("full-resolution", out["faces_found_full"][str(k)])):
            if found_k != k:
                log(f"warning: {name} MTCNN found {found_k} faces in the {k}-face photo")
        t = measure_interleaved(
            {"bound": lambda p=photo: bounded.detect([p]), "full": lambda p=photo: detector.detect([p])}, 1, s
        )
        out["detect"][str(k)], out["detect_full"][str(k)] = t["bound"], t["full"]
    out["bounds"] = compare_bounds(detector, photos, s)
    backbones = list(dict.fromkeys([predict_backbone, *s.backbones])) if not s.quick else [s.backbones[0]]
    for backbone in backbones:
        module = make_module(backbone, channels_last=True, device=s.device).eval()  # as `make train` trains it
        predictor = Predictor(module, device=s.device, detector=bounded)
        full = Predictor(module, device=s.device, detector=detector)
        out["classify"][backbone] = {}
        for k, photo in photos.items():
            b, sc = [d.box for d in boxes[k]], [d.score for d in boxes[k]]
            if b:
                out["classify"][backbone][str(k)] = measure(
                    lambda p=photo, b=b, sc=sc: predictor.classify(p, b, sc), 1, s
                )
            if backbone == backbones[0] and b:  # the net as `Predictor` runs it (folded, channels-last) and as trained
                unfolded = Predictor(module, device=s.device, detector=bounded)
                unfolded.forward = lambda f, c: module(f.to(s.device), c.to(s.device))  # the module as trained
                out["fold"][str(k)] = measure_interleaved(
                    {
                        "folded": lambda p=photo, b=b, sc=sc: predictor.classify(p, b, sc),
                        "unfolded": lambda p=photo, b=b, sc=sc: unfolded.classify(p, b, sc),
                    },
                    1,
                    s,
                )
            if backbone == backbones[0]:  # end to end: MTCNN dominates, the backbone hardly matters
                t = measure_interleaved(
                    {"bound": lambda p=photo: predictor.predict(p), "full": lambda p=photo: full.predict(p)}, 1, s
                )
                out["latency"][str(k)], out["latency_full"][str(k)] = t["bound"], t["full"]
        predictor = full = module = None  # free them before the next backbone (the lambdas close over them)
    out["predict_backbone"] = backbones[0]
    for k in FACE_COUNTS:
        key = str(k)
        log(
            f"predict {k} face(s), longest side {DETECT_MAX_SIDE} ({out['faces_found'][key]} found): "
            f"{_ms(out['latency'][key]):.0f} ms end to end, detection {_ms(out['detect'][key]):.0f} ms; "
            f"full resolution ({out['faces_found_full'][key]} found): {_ms(out['latency_full'][key]):.0f} ms, "
            f"detection {_ms(out['detect_full'][key]):.0f} ms"
        )
    return out
