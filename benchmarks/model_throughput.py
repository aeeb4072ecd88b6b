"""Model-only training throughput: images/s of forward + backward + SGD step on uint8 batches that are
already in memory on the device (no loader), per backbone × precision × memory format."""

from __future__ import annotations

import gc

import torch

from benchmarks.common import FORMATS, PRECISIONS, Settings, Timing, TrainStep, log, make_module, measure, random_batch


def cell(backbone: str, precision: str, fmt: str, s: Settings) -> Timing:
    torch.manual_seed(s.seed)
    module = make_module(backbone, channels_last=fmt == "channels_last", device=s.device)
    step = TrainStep(module, precision, s.device)
    face, context, target = random_batch(s.batch, s.device, seed=s.seed)
    timing = measure(lambda: step(face, context, target), s.batch, s)
    module = step = None  # free them before the next cell (the lambda closes over step)
    gc.collect()
    return timing


def key(precision: str, fmt: str) -> str:
    return f"{precision}/{fmt}"


def run(s: Settings) -> dict:
    """{backbone: {"precision/format": Timing}} and each backbone's best setting."""
    grid: dict[str, dict[str, Timing]] = {}
    best: dict[str, dict] = {}
    for backbone in s.backbones:
        grid[backbone] = {}
        for precision in PRECISIONS:
            for fmt in FORMATS:
                t = cell(backbone, precision, fmt, s)
                grid[backbone][key(precision, fmt)] = t
                log(
                    f"model-only {backbone:12s} {precision:10s} {fmt:13s} {t.median:8.1f} img/s "
                    f"({len(t.samples)}×{t.per_repeat} steps)"
                )
        name = max(grid[backbone], key=lambda k: grid[backbone][k].median)
        precision, fmt = name.split("/")
        best[backbone] = {"precision": precision, "channels_last": fmt == "channels_last", "key": name}
    return {"grid": grid, "best": best}
