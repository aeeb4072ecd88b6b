"""`trainer.precision=auto`: the training precision chosen by measuring both on this machine, and remembered.

Which precision trains fastest depends on the processor and on the network, by up to 2x either way. On an AMD
EPYC without AMX, bf16-mixed trains the original backbone 2.0x faster than fp32, but MobileNetV2 (depthwise
convolutions, memory-bound) no faster (0.89-0.98x in two quiet measurements, before `models/depthwise.py`); on an
Intel Xeon with AMX, bf16 matmuls run at about 6x fp32's rate, and MobileNetV2 trains 1.3x faster in bf16 since
`models/depthwise.py`; on an Intel Xeon whose bf16 instructions the hypervisor hides (no `amx_bf16`,
no `avx512_bf16`) bf16 is emulated, its matmuls at a quarter of fp32's rate (61 against 267 GFLOP/s, 2026-12-01),
and MobileNetV2 trains at 0.76x; on an H200 at batch 32 fp32 wins, at batch 256 bf16 does. A fixed default
is wrong somewhere, so `auto` times a few training steps of a copy of the model, at the run's batch size and
input sizes, in `32-true` and in `bf16-mixed`, and trains in the faster. Within `TIE` of each other it takes
`32-true`: the exact one, when speed does not tell them apart. `eval` under `auto` tests a checkpoint in the
precision it was trained in (`PRECISION_KEY`).

The result is kept in a small JSON file keyed by the machine (processor, its AMX support, torch threads, torch
version, device, and `SPEED_REVISION` of our own code) and the setting (model, batch, input sizes, memory format), so
a machine measures each setting once (5-15 s on 2 CPU cores). The file is `$GLAMOR_CACHE_DIR/precision.json`, by
default `~/.cache/glamor_lightning/precision.json`; delete it to measure again. A measurement taken while other
programs keep more than `BUSY_CORES` of this process's cores busy decides the run but is not remembered: under load
the ratio can be the load's (MobileNetV2 at 1 thread beside two trainings: bf16 1.46x fp32; quiet: 0.94x). A run with
several processes (DDP) does not measure (each process would time a different share of the machine and could choose
differently): it takes `unmeasured_precision`, bf16-mixed where the hardware computes bf16 natively and 32-true
elsewhere (every process reads the same flags, so all choose alike); a `fast_dev_run` takes what is remembered, else
`SMOKE_PRECISION`, unmeasured. The chosen precision is what the run's saved config records.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from glamor_lightning.allocator import keep_freed_memory, keeps_freed_memory
from glamor_lightning.optimizers import make_optimizer
from glamor_lightning.threads import CpuMeter
from glamor_lightning.user_cache import cache_root

log = logging.getLogger(__name__)

AUTO = "auto"
#: what `auto` chooses between, in Lightning's names
CANDIDATES = ("32-true", "bf16-mixed")
#: relative speed difference under which the two count as equal (then `32-true`, the exact one)
TIE = 0.05
#: other programs' load (in cores) above which a measurement is used for the run but not remembered
BUSY_CORES = 0.5
#: /proc/cpuinfo flags of native bf16 arithmetic (Intel AMX tiles; AVX-512 BF16, also on AMD Zen 4 and later)
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: what `auto` means for a `fast_dev_run` with nothing remembered (a smoke test is not worth seconds of timing)
SMOKE_PRECISION = "32-true"
#: the checkpoint entry that records the precision a model was trained in (`EmotionModule.on_save_checkpoint`)
PRECISION_KEY = "train_precision"
#: raised whenever a change of ours moves a setting's speed in one precision, so that measurements remembered before
#: it are taken again (2: bf16 strided depthwise convolutions, `models/depthwise.py`, 1.4x MobileNetV2 in bf16;
#: 3: the original encoder's bf16 max-pool backward by unpooling, `models/maxpool.py`, 1.1x its bf16 step; 4: the
#: steps timed with malloc keeping freed memory when the training will, `allocator.py`, up to 1.11x a bf16 step;
#: 5: the original encoder's BN → max-pool → ReLU as one CPU kernel, `models/fused_bn.py`, 1.2-1.4x its step;
#: 6: that kernel's loops specialised for the encoders' channel counts, 1.04-1.08x its bf16 step)
SPEED_REVISION = 6
#: the precision of checkpoints made before `PRECISION_KEY` (the default then)
EARLIER_DEFAULT = "bf16-mixed"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision `auto` chose, the images/s behind it (empty when not measured) and where it came from."""

    precision: str
    images_per_s: dict[str, float]
    #: "measured", "cache" (measured by an earlier run), "busy" (measured now beside other programs' load, not
    #: remembered), "multi-process" or "smoke" (not measured)
    source: str
    other_cores: float | None = None  #: other programs' load during a "busy" measurement, in cores
    #: whether malloc kept freed memory while the steps were timed (`allocator.keep_freed_memory`; None: CUDA)
    memory_kept: bool | None = None

    def describe(self) -> str:
        rates = ", ".join(f"{p} {r:.1f} img/s" for p, r in self.images_per_s.items())
        how = {
            "measured": "measured now",
            "cache": "measured by an earlier run",
            "busy": f"measured now beside other programs using {self.other_cores or 0:.1f} cores: not remembered",
            "multi-process": "not measured in a run of several processes; bf16 is "
            + ("native here" if self.precision == "bf16-mixed" else "not native here"),
            "smoke": "not measured in a fast_dev_run",
        }[self.source]
        kept = ", malloc keeping freed memory as the training will" if rates and self.memory_kept else ""
        return f"trainer.precision=auto -> {self.precision} ({how}{kept}{': ' + rates if rates else ''})"


def choose(images_per_s: dict[str, float], tie: float = TIE) -> str:
    """The faster precision; `32-true` when bf16-mixed is not faster by more than `tie` (relative)."""
    fp32, bf16 = images_per_s["32-true"], images_per_s["bf16-mixed"]
    return "bf16-mixed" if bf16 > fp32 * (1.0 + tie) else "32-true"


def cache_file() -> Path:
    return cache_root() / "precision.json"


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first processor in `cpuinfo` (default: this machine's /proc/cpuinfo);
    empty where there is no such file (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (the `amx_bf16` flag of /proc/cpuinfo)."""
    return "amx_bf16" in cpu_flags()


def native_bf16(device: torch.device, cpuinfo: str | None = None) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with one of
    `NATIVE_BF16_FLAGS` (ARM: `bf16`). Elsewhere bf16 is emulated and slower than fp32 (module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags(cpuinfo)
    return bool(flags & NATIVE_BF16_FLAGS) or "bf16" in flags


def unmeasured_precision(device: torch.device, cpuinfo: str | None = None) -> str:
    """What `auto` means for a run of several processes, which does not measure: bf16-mixed where the hardware
    computes bf16 natively (where it does, bf16 trained every backbone faster, MobileNetV2 since `models/depthwise.py`
    on AMX; on AMD it was not faster before that), else 32-true."""
    return "bf16-mixed" if native_bf16(device, cpuinfo) else "32-true"


def machine_key(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return f"{processor_name()} | amx={has_amx()} | {where} | torch {torch.__version__} | speed {SPEED_REVISION}"


def setting_key(module, batch_size: int, face_size: int, crop_size: int, memory_kept: bool | None = None) -> str:
    net = module.net.config
    parts = [f"{k}={net[k]}" for k in ("backbone", "inputs", "attention", "fusion", "hidden", "gla_batchnorm")]
    parts += [f"aux_heads={net['aux_heads']}", f"channels_last={module.hparams.channels_last}"]
    parts += [f"fused_bn_pool_relu={module.hparams.get('fused_bn_pool_relu', False)}"]
    parts += [f"batch={batch_size}", f"face={face_size}", f"context={crop_size}"]
    return " ".join(parts + ([] if memory_kept is None else [f"memory_kept={memory_kept}"]))


class TrainStep:
    """One SGD step of an `EmotionModule` on a uint8 NHWC batch, as Lightning runs it: forward (under bf16
    autocast for bf16-mixed, as Lightning's precision plugin does), cross-entropy of every head, backward,
    SGD with momentum (fused, as the module's optimiser unless `fused_sgd=false`). Also what `make bench` times."""

    def __init__(self, module, precision: str, device: torch.device) -> None:
        self.module, self.device = module, device
        self.bf16 = precision.startswith("bf16")
        self.optimizer = make_optimizer(
            [{"params": list(module.parameters())}], "sgd", 1e-4, 0.9, 0.0, False, module.hparams.fused_sgd
        )

    def __call__(self, face: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.module(face, context)
        heads = [x for x in (out.logits, out.face_logits, out.context_logits) if x is not None]
        loss = sum(F.cross_entropy(x.float(), target) for x in heads)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def random_batch(
    n: int, device: torch.device, face_size: int = 96, context_hw: tuple[int, int] = (112, 112), seed: int = 0
):
    """(face, context, target): uint8 NHWC images and class indices, as the data module's training batches."""
    g = torch.Generator().manual_seed(seed)
    face = torch.randint(0, 256, (n, face_size, face_size, 3), dtype=torch.uint8, generator=g)
    context = torch.randint(0, 256, (n, *context_hw, 3), dtype=torch.uint8, generator=g)
    target = torch.randint(0, 7, (n,), generator=g)
    return face.to(device), context.to(device), target.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    module, batch_size: int, face_size: int, crop_size: int, device: torch.device, rounds: int = 3, block_s: float = 1.0
) -> dict[str, float]:
    """Images/s of a training step in each of `CANDIDATES`, on copies of `module` (the module is not touched):
    three warm-up steps each, then `rounds` rounds that alternate the two, each a block of consecutive steps
    lasting about `block_s` (at least two), as a training runs them (steps alternated one by one would each start
    with the other model's memory in the caches); the median block of each. The random state is restored
    afterwards (dropout draws from it), so a run that measures trains exactly as one that reads the cache."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = random_batch(batch_size, device, face_size, (crop_size, crop_size))
        steps = {p: TrainStep(copy.deepcopy(module).to(device).train(), p, device) for p in CANDIDATES}

        def block(step: TrainStep, n: int) -> float:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step(*batch)
            _sync(device)
            return time.perf_counter() - t0

        sizes = {}
        for p, step in steps.items():
            block(step, 2)
            sizes[p] = max(2, round(block_s / max(block(step, 1), 1e-6)))
        rates: dict[str, list[float]] = {p: [] for p in CANDIDATES}
        for _ in range(rounds):
            for p, step in steps.items():
                rates[p].append(sizes[p] * batch_size / block(step, sizes[p]))
    return {p: statistics.median(r) for p, r in rates.items()}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no file yet, or a damaged one: measure again and rewrite it


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one


def resolve_precision(
    module,
    batch_size: int,
    face_size: int,
    crop_size: int,
    device: torch.device,
    processes: int = 1,
    block_s: float = 1.0,
    smoke: bool = False,
    keep_memory: bool = False,
) -> PrecisionChoice:
    """The precision a run of `module` on `device` should train in (see the module docstring); `block_s`: the
    length of a timed block of steps (`measure`); `smoke`: a smoke run (`fast_dev_run`), which is not worth
    seconds of timing: the remembered choice, else `SMOKE_PRECISION` unmeasured. `keep_memory`: the training will
    keep freed memory (`callbacks.keep_freed_memory`), so the steps are timed so too (on a CPU; it speeds a bf16
    step more than an fp32 one, up to 1.11x); whether they were is part of the remembered setting."""
    if processes > 1:
        return PrecisionChoice(unmeasured_precision(device), {}, "multi-process")
    memory_kept = None
    if device.type == "cpu":
        if keep_memory:
            keep_freed_memory()
        memory_kept = keeps_freed_memory()
    path = cache_file()
    machine, setting = machine_key(device), setting_key(module, batch_size, face_size, crop_size, memory_kept)
    known = _read(path).get(machine, {}).get(setting)
    if isinstance(known, dict) and set(known) == set(CANDIDATES):
        return PrecisionChoice(choose(known), known, "cache", memory_kept=memory_kept)
    if smoke:
        return PrecisionChoice(SMOKE_PRECISION, {}, "smoke", memory_kept=memory_kept)
    meter = CpuMeter() if device.type == "cpu" else None
    rates = measure(module, batch_size, face_size, crop_size, device, block_s=block_s)
    other = meter.other_cores() if meter is not None else None
    if other is not None and other > BUSY_CORES:  # the ratio may be the load's, not the machine's
        return PrecisionChoice(choose(rates), rates, "busy", other_cores=other, memory_kept=memory_kept)
    data = _read(path)
    data.setdefault(machine, {})[setting] = {p: round(r, 2) for p, r in rates.items()}
    try:
        _write(path, data)
    except OSError as err:  # a read-only home: the run goes on, the next one measures again
        log.warning("could not remember the precision measurement in %s: %s", path, err)
    return PrecisionChoice(choose(rates), rates, "measured", memory_kept=memory_kept)


def checkpoint_precision(checkpoint: dict) -> str:
    """The precision a checkpoint was trained in: what `eval` tests it in under `auto`, so that it reproduces
    the training run's own test figures."""
    return str(checkpoint.get(PRECISION_KEY) or EARLIER_DEFAULT)


def trainer_processes(trainer_cfg, device: torch.device) -> int:
    """How many processes a trainer config starts (devices x nodes; a torchrun/SLURM world counts too)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        devices = torch.cuda.device_count() if device.type == "cuda" else 1
    elif not isinstance(devices, int):
        devices = len(devices)  # a list of device indices
    return max(world, devices * int(trainer_cfg.get("num_nodes", 1) or 1))


def trainer_device(trainer_cfg) -> torch.device:
    """The device a trainer config trains on (Lightning's `accelerator` auto picks CUDA when there is one)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def auto_precision(trainer_cfg, module, datamodule, keep_memory: bool = False) -> PrecisionChoice:
    """`resolve_precision` for a run described by a trainer config and a data module."""
    device = trainer_device(trainer_cfg)
    data = datamodule.hparams
    return resolve_precision(
        module, int(data.batch_size), int(data.face_size), int(data.crop_size), device,
        processes=trainer_processes(trainer_cfg, device), smoke=bool(trainer_cfg.get("fast_dev_run")),
        keep_memory=keep_memory,
    )  # fmt: skip
