"""SynthCAER scenes: what an image shows (people, colours, expressions, layout), drawn from one seed per image.

Sampling only; pixels are `synth_render`, files are `synth`.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from glamor_lightning.data.classes import CLASSES
from glamor_lightning.data.index import SPLITS

Box = tuple[float, float, float, float]

# Saturated trait colours (hair or hat); backgrounds and clothes are muted so these stand out.
TRAITS: tuple[tuple[int, int, int], ...] = (
    (225, 30, 30),
    (245, 135, 10),
    (240, 215, 20),
    (30, 170, 45),
    (20, 195, 210),
    (35, 70, 225),
    (130, 40, 210),
    (215, 40, 185),
)

# Expression parameters; a face is NEUTRAL + intensity * _DELTA[label] + small noise.
PARAMS = (
    "eye_scale",
    "eye_open",
    "brow_raise",
    "brow_tilt",
    "mouth_curve",
    "mouth_open",
    "mouth_width",
    "mouth_asym",
    "wrinkle",
)
NEUTRAL = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
_DELTA: dict[str, dict[str, float]] = {
    "Anger": dict(eye_open=-0.35, brow_raise=-0.7, brow_tilt=-1.0, mouth_curve=-0.3, mouth_width=-0.3),
    "Disgust": dict(
        eye_open=-0.4, brow_raise=-0.4, brow_tilt=-0.3, mouth_curve=-0.4, mouth_asym=1.0, mouth_width=-0.1, wrinkle=1.0
    ),
    "Fear": dict(
        eye_scale=0.45, eye_open=0.3, brow_raise=0.8, brow_tilt=0.9, mouth_open=0.55, mouth_width=0.4, mouth_curve=-0.35
    ),
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


def _muted(
    rng: np.random.Generator, sat: tuple[float, float] = (0.05, 0.35), val: tuple[float, float] = (0.35, 0.85)
) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def _expression(rng: np.random.Generator, label: str, intensity: float, noise: float) -> np.ndarray:
    return NEUTRAL + intensity * DELTA[label] + rng.normal(0.0, noise, len(PARAMS))


def _person(
    rng: np.random.Generator, cfg: SynthConfig, box: Box, label: str, intensity: float, trait: tuple[int, int, int]
) -> Person:
    skin = tuple(int(c) for c in np.array([235, 195, 165]) - rng.uniform(0, 1) * np.array([85, 90, 90]))
    return Person(
        box=box,
        label=label,
        intensity=intensity,
        expression=_expression(rng, label, intensity, cfg.expression_noise),
        trait=trait,
        hat=bool(rng.random() < 0.4),
        skin=skin,  # type: ignore[arg-type]
        clothes=_muted(rng, sat=(0.1, 0.45), val=(0.25, 0.75)),
    )


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
    box = _head_box(
        cfg, h, rng.uniform(0.4 * h + 2, cfg.width - 0.4 * h - 2), rng.uniform(3, max(4.0, cfg.height * 0.55 - h))
    )
    assert box is not None
    return box


def _place_bystander(
    rng: np.random.Generator, cfg: SynthConfig, target: Person, placed: list[Person], tries: int = 60
) -> Box | None:
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
        if any(
            _overlap(box, o.box) or _overlap(box, o.body(), 0.0) or _overlap(o.box, body, 0.0)
            for o in [target, *placed]
        ):
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
            people.append(
                _person(
                    rng,
                    cfg,
                    box,
                    label if companion else CLASSES[rng.integers(len(CLASSES))],
                    float(rng.uniform(*cfg.strong_intensity)),
                    traits[0] if companion else traits[1 + k],
                )
            )
        if len(people) == len(roles):
            break
        if attempt % 20 == 0 and "distractor" in roles:  # crowded: drop a distractor (rare)
            roles.remove("distractor")
    order = np.argsort([p.box[3] for p in people], kind="stable")  # farther (higher chin) first
    people = [people[i] for i in order]
    comp = next((i for i, p in enumerate(people) if p.trait == target.trait), None)
    background = dict(
        top=_muted(rng),
        bottom=_muted(rng),
        floor=_muted(rng, val=(0.25, 0.6)),
        floor_y=rng.uniform(0.55, 0.85) * cfg.height,
        shapes=[
            (
                _muted(rng),
                bool(rng.random() < 0.35),
                *sorted(rng.uniform(0, cfg.width, 2)),
                *sorted(rng.uniform(0, cfg.height, 2)),
            )
            for _ in range(int(rng.integers(3, 9)))
        ],
    )
    return Scene(target=target, bystanders=people, companion=comp, weak=bool(weak), background=background)
