"""SynthCAER: a generated stand-in for CAER-S, so the whole pipeline runs with no download.

Each image shows a target person whose face carries the label (strongly, or so weakly that it looks
neutral), a companion who shares the target's hair/hat colour and shows the same emotion strongly, and
distractors with other colours and random emotions. Companion and distractors are placed alike, so only
the colour visible inside the target's face box tells which bystander belongs to the target: the face
guides the context, as GLAMOR-Net's global-local attention assumes. See docs/synthcaer.md.
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
import multiprocessing
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.index import INDEX_NAME, SPLITS, FaceRow, write_index

Box = tuple[float, float, float, float]
CONFIG_NAME = "synthcaer.json"  # the generating SynthConfig, written next to faces.csv
SS = 2  # supersampling factor: draw at 2x, then box-filter down, for anti-aliased shapes

# Saturated trait colours (hair or hat); backgrounds and clothes are muted so these stand out.
TRAITS: tuple[tuple[int, int, int], ...] = (
    (225, 30, 30), (245, 135, 10), (240, 215, 20), (30, 170, 45),
    (20, 195, 210), (35, 70, 225), (130, 40, 210), (215, 40, 185),
)

# Expression parameters; a face is NEUTRAL + intensity * _DELTA[label] + small noise.
PARAMS = ("eye_scale", "eye_open", "brow_raise", "brow_tilt", "mouth_curve", "mouth_open",
          "mouth_width", "mouth_asym", "wrinkle")
NEUTRAL = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
_DELTA: dict[str, dict[str, float]] = {
    "Anger": dict(eye_open=-0.35, brow_raise=-0.7, brow_tilt=-1.0, mouth_curve=-0.3, mouth_width=-0.3),
    "Disgust": dict(eye_open=-0.4, brow_raise=-0.4, brow_tilt=-0.3, mouth_curve=-0.4, mouth_asym=1.0,
                    mouth_width=-0.1, wrinkle=1.0),
    "Fear": dict(eye_scale=0.45, eye_open=0.3, brow_raise=0.8, brow_tilt=0.9, mouth_open=0.55,
                 mouth_width=0.4, mouth_curve=-0.35),
    "Happy": dict(eye_open=-0.45, brow_raise=0.15, mouth_curve=1.0, mouth_open=0.35, mouth_width=0.3),
    "Neutral": {},
    "Sad": dict(eye_open=-0.2, brow_raise=0.1, brow_tilt=1.0, mouth_curve=-1.0, mouth_width=-0.1),
    "Surprise": dict(eye_scale=0.5, eye_open=0.4, brow_raise=1.2, mouth_open=1.0, mouth_width=-0.45),
}
DELTA = {k: np.array([d.get(p, 0.0) for p in PARAMS]) for k, d in _DELTA.items()}


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and knobs of a SynthCAER data set; `generate` is a pure function of this (and `out`)."""

    per_class_train: int = 400
    per_class_val: int = 80
    per_class_test: int = 120
    width: int = 320
    height: int = 180
    weak_fraction: float = 0.4  # share of target faces drawn at weak (near-neutral) intensity
    weak_intensity: tuple[float, float] = (0.05, 0.2)
    strong_intensity: tuple[float, float] = (0.7, 1.0)
    face_px: tuple[int, int] = (35, 60)  # target face box height, hair/hat included
    max_distractors: int = 2
    companion: bool = True
    bystander_spread: float = 40.0  # mean extra distance (px) of bystanders beyond touching the target
    expression_noise: float = 0.06  # per-parameter jitter, so weak faces overlap neutral ones
    seed: int = 0

    def per_class(self, split: str) -> int:
        return {"train": self.per_class_train, "val": self.per_class_val, "test": self.per_class_test}[split]


@dataclass
class Person:
    """One drawn person; `box` is the head (hair/hat included) in output pixels."""

    box: Box
    label: str
    intensity: float
    expression: np.ndarray  # values for PARAMS
    trait: tuple[int, int, int]
    hat: bool
    skin: tuple[int, int, int]
    clothes: tuple[int, int, int]

    def body(self) -> Box:
        return body_box(self.box)


def body_box(head: Box) -> Box:
    """The torso under a head: wider than the head, running down past the image bottom."""
    x1, y1, x2, y2 = head
    w, cx = x2 - x1, (x1 + x2) / 2
    return (cx - 0.8 * w, y2 + 0.04 * (y2 - y1), cx + 0.8 * w, y2 + 3.0 * (y2 - y1))


@dataclass
class Scene:
    """Everything needed to render one image; bystanders are drawn back to front, target last."""

    target: Person
    bystanders: list[Person] = field(default_factory=list)
    companion: int | None = None  # index into bystanders
    weak: bool = False  # the target's face was drawn at weak intensity
    background: dict = field(default_factory=dict)


def scene_rng(seed: int, split: str, label: str, index: int) -> np.random.Generator:
    """One generator per image, so images do not depend on generation order or worker count."""
    return np.random.default_rng([seed, SPLITS.index(split), CLASSES.index(label), index])


def _muted(rng: np.random.Generator, sat: tuple[float, float] = (0.05, 0.35),
           val: tuple[float, float] = (0.35, 0.85)) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def _expression(rng: np.random.Generator, label: str, intensity: float, noise: float) -> np.ndarray:
    return NEUTRAL + intensity * DELTA[label] + rng.normal(0.0, noise, len(PARAMS))


def _person(rng: np.random.Generator, cfg: SynthConfig, box: Box, label: str, intensity: float,
            trait: tuple[int, int, int]) -> Person:
    skin = tuple(int(c) for c in np.array([235, 195, 165]) - rng.uniform(0, 1) * np.array([85, 90, 90]))
    return Person(box=box, label=label, intensity=intensity,
                  expression=_expression(rng, label, intensity, cfg.expression_noise),
                  trait=trait, hat=bool(rng.random() < 0.4), skin=skin,  # type: ignore[arg-type]
                  clothes=_muted(rng, sat=(0.1, 0.45), val=(0.25, 0.75)))


def _overlap(a: Box, b: Box, pad: float = 2.0) -> bool:
    return a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]


def _head_box(cfg: SynthConfig, h: float, cx: float, top: float) -> Box | None:
    """A head of height h (width 0.8 h) centred at cx, or None if it would leave the image."""
    h = round(float(np.clip(h, 24, cfg.height * 0.45)))
    w = round(0.8 * h)
    x1, top = round(cx - w / 2), int(np.clip(round(top), 2, cfg.height - h - 2))
    if not 2 <= x1 <= cfg.width - w - 2:
        return None
    return float(x1), float(top), float(x1 + w), float(top + h)


def _place_target(rng: np.random.Generator, cfg: SynthConfig) -> Box:
    h = rng.uniform(*cfg.face_px)
    box = _head_box(cfg, h, rng.uniform(0.4 * h + 2, cfg.width - 0.4 * h - 2),
                    rng.uniform(3, max(4.0, cfg.height * 0.55 - h)))
    assert box is not None
    return box


def _place_bystander(rng: np.random.Generator, cfg: SynthConfig, target: Person,
                     placed: list[Person], tries: int = 60) -> Box | None:
    """A head box near the target whose person neither touches the target's face box nor hides a head.

    Every bystander (companion or distractor) is placed this way, so position tells no roles apart.
    """
    tx1, ty1, tx2, ty2 = target.box
    for attempt in range(tries):
        h = (ty2 - ty1) * rng.uniform(0.85, 1.15)
        if attempt < tries // 2:  # beside the target, at an exponentially distributed extra distance
            dx = 0.4 * 0.8 * h + 0.8 * (tx2 - tx1) + 2 + rng.exponential(cfg.bystander_spread)
            cx = (tx1 + tx2) / 2 + rng.choice((-1.0, 1.0)) * dx
        else:  # crowded: anywhere
            cx = rng.uniform(0, cfg.width)
        box = _head_box(cfg, h, cx, ty1 + rng.uniform(-10, 10))
        if box is None:
            continue
        body = body_box(box)
        if _overlap(box, target.box) or _overlap(body, target.box, pad=1.0):
            continue
        if any(_overlap(box, o.box) or _overlap(box, o.body(), 0.0) or _overlap(o.box, body, 0.0)
               for o in [target, *placed]):
            continue
        return box
    return None


def sample_scene(cfg: SynthConfig, split: str, label: str, index: int) -> Scene:
    """Draw the random content of one image (no pixels): people, expressions, colours, layout."""
    rng = scene_rng(cfg.seed, split, label, index)
    weak = rng.random() < cfg.weak_fraction
    intensity = float(rng.uniform(*(cfg.weak_intensity if weak else cfg.strong_intensity)))
    traits = [TRAITS[i] for i in rng.permutation(len(TRAITS))]
    n_distract = int(rng.integers(0, min(cfg.max_distractors, len(TRAITS) - 1) + 1))
    roles = ["companion"] * cfg.companion + ["distractor"] * n_distract
    roles = [roles[i] for i in rng.permutation(len(roles))]
    for attempt in range(1, 1000):  # retry the whole layout until every bystander fits
        target = _person(rng, cfg, _place_target(rng, cfg), label, intensity, traits[0])
        people: list[Person] = []
        for k, role in enumerate(roles):
            box = _place_bystander(rng, cfg, target, people)
            if box is None:
                break
            companion = role == "companion"
            people.append(_person(rng, cfg, box, label if companion else CLASSES[rng.integers(len(CLASSES))],
                                  float(rng.uniform(*cfg.strong_intensity)),
                                  traits[0] if companion else traits[1 + k]))
        if len(people) == len(roles):
            break
        if attempt % 20 == 0 and "distractor" in roles:  # crowded: drop a distractor (rare)
            roles.remove("distractor")
    order = np.argsort([p.box[3] for p in people], kind="stable")  # farther (higher chin) first
    people = [people[i] for i in order]
    comp = next((i for i, p in enumerate(people) if p.trait == target.trait), None)
    background = dict(top=_muted(rng), bottom=_muted(rng), floor=_muted(rng, val=(0.25, 0.6)),
                      floor_y=rng.uniform(0.55, 0.85) * cfg.height,
                      shapes=[(_muted(rng), bool(rng.random() < 0.35),
                               *sorted(rng.uniform(0, cfg.width, 2)), *sorted(rng.uniform(0, cfg.height, 2)))
                              for _ in range(int(rng.integers(3, 9)))])
    return Scene(target=target, bystanders=people, companion=comp, weak=bool(weak), background=background)


class _Canvas:
    """ImageDraw in output-pixel coordinates on a supersampled image."""

    def __init__(self, img: Image.Image) -> None:
        self.draw = ImageDraw.Draw(img)

    @staticmethod
    def _s(xy: Box) -> list[float]:
        """Scale a box; PIL includes the far edge pixel, so stop one sub-pixel short to stay inside."""
        return [xy[0] * SS, xy[1] * SS, max(xy[0] * SS, xy[2] * SS - 1), max(xy[1] * SS, xy[3] * SS - 1)]

    def ellipse(self, xy: Box, fill, outline=None, width: float = 0) -> None:
        self.draw.ellipse(self._s(xy), fill=fill, outline=outline, width=round(width * SS))

    def rect(self, xy: Box, fill, radius: float = 0) -> None:
        self.draw.rounded_rectangle(self._s(xy), radius=radius * SS, fill=fill)

    def chord(self, xy: Box, fill) -> None:
        self.draw.chord(self._s(xy), 180, 360, fill=fill)

    def line(self, pts: list[tuple[float, float]], fill, width: float) -> None:
        self.draw.line([(x * SS, y * SS) for x, y in pts], fill=fill, width=max(1, round(width * SS)),
                       joint="curve")

    def polygon(self, pts: list[tuple[float, float]], fill) -> None:
        self.draw.polygon([(x * SS, y * SS) for x, y in pts], fill=fill)


INK = (35, 22, 18)


def _draw_head(c: _Canvas, p: Person) -> None:
    """Hair (or hat) in the trait colour and the skin oval; together they fill the face box exactly."""
    x1, y1, x2, y2 = p.box
    w, h = x2 - x1, y2 - y1
    if p.hat:
        c.ellipse((x1 + 0.07 * w, y1 + 0.2 * h, x2 - 0.07 * w, y2), p.skin)
        c.rect((x1 + 0.12 * w, y1, x2 - 0.12 * w, y1 + 0.3 * h), p.trait, radius=0.1 * w)
        c.rect((x1, y1 + 0.22 * h, x2, y1 + 0.31 * h), p.trait, radius=0.04 * w)
    else:
        c.ellipse((x1, y1, x2, y1 + 0.75 * h), p.trait)
        c.ellipse((x1 + 0.07 * w, y1 + 0.2 * h, x2 - 0.07 * w, y2), p.skin)
        c.chord((x1 + 0.07 * w, y1 + 0.1 * h, x2 - 0.07 * w, y1 + 0.5 * h), p.trait)


def _draw_face(c: _Canvas, p: Person) -> None:
    """Eyes, brows and mouth shaped by the expression parameters."""
    e = dict(zip(PARAMS, p.expression))
    x1, y1, x2, y2 = p.box
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    lw = max(1.5, h / 16)
    ey = y1 + 0.53 * h
    rx = 0.09 * w * max(e["eye_scale"], 0.5)
    ry = 0.075 * w * max(e["eye_scale"], 0.5) * max(e["eye_open"], 0.25)
    pr = min(rx, ry, 0.055 * w)
    by = y1 + 0.42 * h - e["brow_raise"] * 0.07 * h
    for side in (-1, 1):
        ex = cx + side * 0.21 * w
        c.ellipse((ex - rx, ey - ry, ex + rx, ey + ry), (250, 250, 245), outline=INK, width=lw / 3)
        c.ellipse((ex - pr, ey - pr, ex + pr, ey + pr), INK)
        inner, outer = (cx + side * 0.06 * w, by - e["brow_tilt"] * 0.07 * h), (cx + side * 0.34 * w, by)
        c.line([inner, outer], INK, lw)
    if e["wrinkle"] > 0.3:
        for side in (-1, 1):
            c.line([(cx + side * 0.05 * w, ey - 0.04 * h), (cx + side * 0.02 * w, ey + 0.06 * h)],
                   INK, lw / 2)
    c.line([(cx, ey + 0.06 * h), (cx - 0.04 * w, y1 + 0.69 * h), (cx + 0.02 * w, y1 + 0.7 * h)],
           tuple(int(v * 0.75) for v in p.skin), lw / 2)
    _draw_mouth(c, e, cx, y1 + 0.82 * h, w, h, max(1.5, h / 22))


def _draw_mouth(c: _Canvas, e: dict, cx: float, my: float, w: float, h: float, lw: float) -> None:
    """Centre line bends with `mouth_curve` (corners up = smile) and tilts with `mouth_asym`;
    `mouth_open` parts the lips around it."""
    t = np.linspace(-1, 1, 17)
    xs = cx + t * 0.2 * w * max(e["mouth_width"], 0.35)
    mid = my - e["mouth_curve"] * 0.08 * h * (t**2 - 0.4) + e["mouth_asym"] * 0.06 * h * t
    half = max(e["mouth_open"], 0.0) * 0.075 * h * np.sqrt(1 - t**2)
    if e["mouth_open"] > 0.12:
        c.polygon(list(zip(xs, mid - half)) + list(zip(xs[::-1], (mid + half)[::-1])), (90, 20, 25))
    c.line(list(zip(xs, mid - half)), INK, lw)
    if e["mouth_open"] > 0.12:
        c.line(list(zip(xs, mid + half)), INK, lw)


def _draw_person(c: _Canvas, p: Person) -> None:
    x1, y1, x2, y2 = p.box
    w, cx = x2 - x1, (x1 + x2) / 2
    c.rect((cx - 0.15 * w, y2 - 0.1 * w, cx + 0.15 * w, y2 + 0.25 * w), p.skin)
    c.rect(p.body(), p.clothes, radius=0.3 * w)
    _draw_head(c, p)
    _draw_face(c, p)


def _background(cfg: SynthConfig, bg: dict) -> Image.Image:
    H, W = cfg.height * SS, cfg.width * SS
    ramp = np.linspace(0, 1, H)[:, None, None]
    column = ((1 - ramp) * np.array(bg["top"]) + ramp * np.array(bg["bottom"])).astype(np.uint8)
    img = Image.fromarray(column).resize((W, H), Image.Resampling.NEAREST)
    c = _Canvas(img)
    for colour, round_, xa, xb, ya, yb in bg["shapes"]:
        (c.ellipse if round_ else c.rect)((xa, ya, xb, yb), colour)
    c.rect((0, bg["floor_y"], cfg.width, cfg.height), bg["floor"])
    return img


def render(cfg: SynthConfig, scene: Scene) -> Image.Image:
    """Pixels of a scene: background, bystanders back to front, then the target (never occluded)."""
    img = _background(cfg, scene.background)
    c = _Canvas(img)
    for p in [*scene.bystanders, scene.target]:
        _draw_person(c, p)
    return img.reduce(SS)  # box-filter average of SS x SS blocks


def save_config(root: str | Path, cfg: SynthConfig) -> Path:
    """Write the generating config next to the images (`ROOT/synthcaer.json`)."""
    path = Path(root) / CONFIG_NAME
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    return path


def load_config(root: str | Path) -> SynthConfig:
    """The config that made `root`: `ROOT/synthcaer.json`, or the defaults when the root has none."""
    path = Path(root) / CONFIG_NAME
    if not path.is_file():
        return SynthConfig()
    raw = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown SynthConfig field(s) {', '.join(unknown)}")
    return SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _file_name(split: str, label: str, index: int) -> str:
    return f"{split}/{label}/{split}_{label.lower()}_{index:04d}.png"


_FILE_NAME = re.compile(r"^(train|val|test)/([A-Za-z]+)/\1_([a-z]+)_(\d+)\.png$")


def parse_file_name(path: str) -> tuple[str, str, int]:
    """(split, label, index) of a SynthCAER file name (the inverse of how `generate` names files)."""
    m = _FILE_NAME.match(path)
    if not m or m.group(2) not in CLASSES or m.group(3) != m.group(2).lower():
        raise ValueError(f"{path!r} is not a SynthCAER file name (split/Class/split_class_NNNN.png)")
    return m.group(1), m.group(2), int(m.group(4))


def _make_one(job: tuple[str, SynthConfig, str, str, int]) -> FaceRow:
    out, cfg, split, label, index = job
    scene = sample_scene(cfg, split, label, index)
    rel = _file_name(split, label, index)
    render(cfg, scene).save(Path(out) / rel, format="PNG", compress_level=1)  # fast; sizes barely differ
    return FaceRow(split=split, path=rel, label=label, box=scene.target.box, score=1.0, source="synthetic")


def generate(out: Path | str, cfg: SynthConfig = SynthConfig(), workers: int | None = None,
             progress: bool = False) -> Path:
    """Write SynthCAER under `out` (`{split}/{Class}/*.png`, then `faces.csv` last) and return `out`.

    The same config gives byte-identical files whatever `workers` is; `faces.csv` only appears once
    every image is written, so its presence marks a complete data set.
    """
    out = Path(out)
    (out / INDEX_NAME).unlink(missing_ok=True)
    jobs = [(str(out), cfg, s, c, i) for s in SPLITS for c in CLASSES for i in range(cfg.per_class(s))]
    for s in SPLITS:
        for c in CLASSES:
            (out / s / c).mkdir(parents=True, exist_ok=True)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        rows = [_make_one(j) for j in _progress(jobs, progress)]
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            rows = list(_progress(pool.imap(_make_one, jobs, chunksize=32), progress, total=len(jobs)))
    save_config(out, cfg)
    write_index(out / INDEX_NAME, rows)  # jobs are in (split, class, index) order, so rows are too
    return out


def _progress(it, enabled: bool, total: int | None = None):
    """Wrap an iterable in a rich progress bar when asked and rich is installed."""
    if not enabled:
        return it
    try:
        from rich.progress import track
    except ImportError:
        return it
    return track(it, total=total if total is not None else len(it), description="SynthCAER")
