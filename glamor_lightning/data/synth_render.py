"""SynthCAER pixels: draws a sampled `Scene` (supersampled PIL drawing, box-filtered down)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from glamor_lightning.data.synth_scene import PARAMS, Box, Person, Scene, SynthConfig

SS = 2  # supersampling factor: draw at 2x, then box-filter down, for anti-aliased shapes


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
        self.draw.line([(x * SS, y * SS) for x, y in pts], fill=fill, width=max(1, round(width * SS)), joint="curve")

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
            c.line([(cx + side * 0.05 * w, ey - 0.04 * h), (cx + side * 0.02 * w, ey + 0.06 * h)], INK, lw / 2)
    c.line(
        [(cx, ey + 0.06 * h), (cx - 0.04 * w, y1 + 0.69 * h), (cx + 0.02 * w, y1 + 0.7 * h)],
        tuple(int(v * 0.75) for v in p.skin),
        lw / 2,
    )
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
