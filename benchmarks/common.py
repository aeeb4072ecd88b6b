"""Shared pieces of the benchmarks: device choice, timing (median of repeats after warm-up), the machine
description, the training step that every throughput figure times, and the benchmark data root."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# the training step `make bench` times is the one `trainer.precision=auto` times: one definition
from glamor_lightning.precision_choice import TrainStep, has_amx, native_bf16, processor_name, random_batch  # noqa: F401 (re-exported)

BATCH = 32
BACKBONES = ("original", "mobilenetv2", "resnet18")
PRECISIONS = ("fp32", "bf16-mixed")
FORMATS = ("nchw", "channels_last")
REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_worker(module: str, args: list[str], env_over: dict[str, str | None] | None = None) -> dict:
    """Runs `python -m <module> --worker ARGS` in a fresh process (with this repository importable; `env_over`:
    variables to set, or to remove where None) and returns the JSON object on the last line of its output. For
    measurements that must not share a process: OpenMP reads its environment once, malloc's thresholds move with
    what the process has freed."""
    env = dict(os.environ)
    for k, v in (env_over or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", module, "--worker", *args], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- settings ---------------------------------------------------------------------------------------
@dataclass
class Settings:
    """How hard to measure. `quick` is a smoke test (tests, CI): tiny, its figures mean little."""

    device: torch.device
    quick: bool = False
    repeats: int = 5  #: timed repeats per figure (the median is reported)
    min_repeats: int = 3  #: fewer than `repeats` only when a figure would exceed `cell_budget_s`
    warmup: int = 2  #: untimed calls before the repeats
    repeat_s: float = 1.0  #: a repeat runs enough steps/batches to last about this long
    cell_budget_s: float = 15.0  #: time one figure may take (repeats are cut to `min_repeats` beyond it)
    slow_call_s: float = 2.0  #: a warm-up call this slow (after the first) ends the warm-up
    batch: int = BATCH
    backbones: tuple[str, ...] = BACKBONES
    full_workers: int = 0  #: loader workers of the full-training figures
    data_images: int = 640  #: images the data-path loaders cycle over
    seed: int = 0

    @classmethod
    def make(cls, device: torch.device, quick: bool = False, **over) -> Settings:
        base = dict(full_workers=0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
        if quick:
            base.update(
                quick=True,
                repeats=1,
                min_repeats=1,
                warmup=1,
                repeat_s=0.05,
                cell_budget_s=4.0,
                batch=4,
                data_images=48,
                backbones=("original",),
            )
        base.update({k: v for k, v in over.items() if v is not None})
        return cls(device=device, **base)


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- timing -----------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Items per second of each timed repeat; `median` is the figure reported."""

    samples: list[float] = field(default_factory=list)
    per_repeat: int = 0  #: calls of the timed function per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def to_dict(self) -> dict:
        return {
            "median": self.median,
            "samples": [round(s, 3) for s in self.samples],
            "calls_per_repeat": self.per_repeat,
        }


def calls_per_repeat(seconds_per_call: float, s: Settings, at_least: int = 1) -> int:
    return max(at_least, min(1000, round(s.repeat_s / max(seconds_per_call, 1e-6))))


def warm_up(fn: Callable[[], object], s: Settings) -> float:
    """`s.warmup` untimed calls; returns the seconds of the last, which sizes the repeats. The first
    call pays one-off costs (cuDNN autotuning, allocator growth: seconds on a GPU), so it sizes the
    repeats only when `s.warmup` is 1; after it, one call over `s.slow_call_s` ends the warm-up."""
    seconds = 0.0
    for i in range(max(1, s.warmup)):
        sync(s.device)
        t0 = time.perf_counter()
        fn()
        sync(s.device)
        seconds = time.perf_counter() - t0
        if i > 0 and seconds > s.slow_call_s:
            break
    return seconds


def measure(fn: Callable[[], object], items_per_call: int, s: Settings, at_least: int = 1) -> Timing:
    """Median items/s of `fn`: `s.warmup` untimed calls, then repeats of k calls each (k chosen so a
    repeat lasts about `s.repeat_s`), device synchronised around every repeat."""
    dev = s.device
    k = calls_per_repeat(warm_up(fn, s), s, at_least)
    timing = Timing(per_repeat=k)
    started = time.perf_counter()
    while len(timing.samples) < s.repeats:
        if len(timing.samples) >= s.min_repeats and time.perf_counter() - started > s.cell_budget_s:
            break
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        sync(dev)
        timing.samples.append(k * items_per_call / (time.perf_counter() - t0))
    return timing


def measure_interleaved(
    fns: dict[str, Callable[[], object]], items_per_call: int, s: Settings, at_least: int = 1
) -> dict[str, Timing]:
    """Like `measure` for several functions whose ratio is wanted: their repeats alternate
    (A B C A B C ...), so a change of machine load hits all of them alike."""
    dev = s.device
    ks: dict[str, int] = {}
    for name, fn in fns.items():
        ks[name] = calls_per_repeat(warm_up(fn, s), s, at_least)
    out = {name: Timing(per_repeat=ks[name]) for name in fns}
    started = time.perf_counter()
    budget = s.cell_budget_s * len(fns)
    for r in range(s.repeats):
        if r >= s.min_repeats and time.perf_counter() - started > budget:
            break
        for name, fn in fns.items():
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(ks[name]):
                fn()
            sync(dev)
            out[name].samples.append(ks[name] * items_per_call / (time.perf_counter() - t0))
    return out


# -- the training step ------------------------------------------------------------------------------
def make_module(backbone: str, channels_last: bool, device: torch.device):
    from glamor_lightning.module import EmotionModule

    module = EmotionModule(backbone=backbone, channels_last=channels_last, pretrained=False).to(device)
    return module.train()


# -- the machine ------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict:
    info = {
        "cpu": processor_name(),
        "amx": has_amx(),
        "native_bf16": native_bf16(device),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cuda": None,
    }
    with contextlib.suppress(OSError):  # no load average on this platform
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)  # > cores: the figures are contended
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["cuda"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def machine_kind(machine: dict) -> tuple[str, str | None]:
    """What a result's machine is, as far as our speed goes: (the GPU's name, "GPU"), or (the processor's name, "AMX" |
    "no native bf16" | None), the flag being what decides its bf16 speed. A flag missing from an older file (None)
    counts as the common case: no AMX, bf16 not known to be emulated. `kind_slug` and the README's tables
    (`benchmarks.readme`) both name kinds from this."""
    gpu = machine.get("cuda")
    if gpu:
        return gpu["name"], "GPU"
    cpu = machine.get("cpu") or ""
    if machine.get("amx"):
        return cpu, "AMX"
    return cpu, "no native bf16" if machine.get("native_bf16") is False else None


def kind_slug(machine: dict) -> str:
    """The machine kind in a file name: the GPU's or the processor's name without its trademarks and filler words,
    with `-amx` or `-no-native-bf16` where that decides its bf16 speed ("amd-epyc", "intel-xeon-amx",
    "nvidia-h200"), so that results of two kinds made the same day do not share a name."""
    name, flag = machine_kind(machine)
    name = re.sub(r"\((r|tm)\)|\b(processor|cpu|\d+-core)\b|@.*$", " ", name.lower())
    slug = "-".join(re.findall(r"[a-z0-9]+", name))[:40].strip("-") or "unknown"
    return slug if flag in (None, "GPU") else f"{slug}-{flag.replace(' ', '-').lower()}"


def unused_path(folder: Path, stem: str, suffix: str = ".json") -> Path:
    """`folder/stem.json`, or `stem-2.json`, `stem-3.json`, ... where that exists: a result is never written over."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


# -- data -------------------------------------------------------------------------------------------
def bench_root(data: str | None, quick: bool) -> tuple[Path, Path | None]:
    """The data root the data-path and full-training figures read: `data`, else the repo's
    data/synthcaer when it exists (not in quick mode), else a small SynthCAER made in a temp dir
    (returned second, for removal)."""
    if data:
        return Path(data), None
    default = REPO / "data" / "synthcaer"
    if not quick and (default / "faces.csv").is_file():
        return default, None
    from glamor_lightning.data.synth import SynthConfig, generate

    tmp = Path(tempfile.mkdtemp(prefix="glamor-bench-"))
    per = 8 if quick else 100
    log(f"making a SynthCAER root ({per} train images per class) in {tmp}")
    cfg = SynthConfig(per_class_train=per, per_class_val=2, per_class_test=2, seed=0)
    return generate(tmp / "synthcaer", cfg, workers=0 if quick else 2), tmp


def main_job_root(
    data: str | None, quick: bool, fallback: Path, default: Path = REPO / "data" / "synthcaer"
) -> tuple[Path, Path | None, bool]:
    """The data root the main job is timed on, a temp dir to remove afterwards (or None), and whether that root is
    what `make train` reads: `data`; else the repo's data/synthcaer, which `make train` makes and reads; else (not in
    quick mode) a SynthCAER made in a temp dir with `glamor prepare synth`'s defaults, the images `make synth` makes,
    so that a machine that has not trained yet projects the job it would run (the other sections' smaller root made
    the projection 4-5x too short, 2026-12-07). Quick runs take `fallback`, the other sections' small root: they
    check that the section works, not its figure. `default`: where `make train` keeps its data."""
    if data:
        return Path(data), None, Path(data).resolve() == default.resolve()
    if not quick and (default / "faces.csv").is_file():
        return default, None, True
    if quick:
        return fallback, None, False
    from glamor_lightning.data.synth import generate

    tmp = Path(tempfile.mkdtemp(prefix="glamor-bench-job-"))
    log(f"{default} is absent: making the SynthCAER `make synth` makes (its defaults) in {tmp} for the main job")
    return generate(tmp / "synthcaer", workers=2), tmp, True


def caer_size_root(quick: bool) -> tuple[Path, Path]:
    """A temporary SynthCAER at CAER-S's frame size (712×400), so that the decode path pays what it
    pays on the real data set (decoding cost grows with the image, the cache's does not)."""
    from glamor_lightning.data.synth import SynthConfig, generate

    tmp = Path(tempfile.mkdtemp(prefix="glamor-bench-caer-"))
    per = 8 if quick else 100
    log(f"making a CAER-S-sized (712x400) SynthCAER root ({per} train images per class) in {tmp}")
    cfg = SynthConfig(
        per_class_train=per, per_class_val=2, per_class_test=2, width=712, height=400, face_px=(80, 130), seed=0
    )
    return generate(tmp / "synthcaer", cfg, workers=0 if quick else 2), tmp
