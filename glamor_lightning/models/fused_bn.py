"""The original encoder's batch norm → max-pool → ReLU in training, fused into one CPU kernel (`bn_pool_relu.c`).

Why: in the original model's training step on the CPU, those three layers move far more memory than they compute. At
batch 32 in bf16 channels-last they took 69 of a 157 ms step on an Intel Xeon with AMX (2026-12-07), where the
convolutions run near the matmul peak: torch runs them as separate kernels, each reading and writing the whole
activation (the batch norm's statistics, its normalisation, the pooling and its int64 indices, the ReLU; in the
backward the ReLU's mask, the unpooling into a zero-filled tensor, the batch norm's two passes). The fused kernel
reads the batch norm's input twice each way and writes only what the next layer needs:

- forward: the per-channel statistics (one pass), then for each pooling window the normalised values, their maximum
  (ties to the first in scan order, a NaN wins, as torch's pooling) and its ReLU, keeping a byte per output for
  where the maximum was;
- backward: the batch norm's two sums from the pooled gradient alone (the gradient is zero off the maxima), then
  every input's gradient in one pass.

It computes the maths of `BatchNorm2d` (training: batch statistics, running statistics updated with the unbiased
variance) → `MaxPool2d(k)` → `ReLU`, to rounding: its sums run in another order than torch's, so outputs and
gradients differ from the three layers' by float rounding, and in bf16 a window whose two largest values round
together may pick another of them, as the layers themselves would under another summation order
(tests/models/test_fused_bn.py bounds both). Checkpoints are unchanged: the modules and their state stay as they are.

It runs where it pays and is exact in its contract: training with gradients, on the CPU, an input in channels-last
memory, float32 or bfloat16, a plain `BatchNorm2d` with affine parameters and a momentum, at most 2,048 channels (the
kernel's buffers; it says its own limit). Anywhere else (evaluation,
a GPU, NCHW, a `SyncBatchNorm` under DDP) the layers run as torch's own modules. The kernel is built on first use
with the system's C compiler (`cc`, or `$CC`; OpenMP; about a second) into `user_cache.cache_root()`/kernels, keyed
by the source, the compiler and the processor, so a home directory shared by two machine kinds never loads code built
for the other. Without a compiler training goes on with torch's layers, after one warning that says so.

Measured (`make bench`, "rewrites", Intel Xeon with AMX, 2026-12-08): the original model's training step 1.55× in
bf16 and 1.25× in fp32 at batch 32 (1.42× and 1.23× before the kernel's loops were specialised for the encoders'
channel counts); those layers alone 1.6-2.1× in bf16 and about 2.5× in fp32 before that.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from glamor_lightning.user_cache import cache_root

from .maxpool import tiles

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("bn_pool_relu.c")
#: the compiler's flags: -march=native is safe as the cache is keyed by the processor
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")
#: the data types the kernel computes in, and its flag for each (1: bfloat16)
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def _processor() -> str:
    """The processor's model and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))


def _build(compiler: list[str]) -> Path:
    """The shared library for this source, compiler (its command) and processor: built once (atomically), then
    reused."""
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _processor()]).encode()).hexdigest()
    target = cache_root() / "kernels" / f"bn_pool_relu-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run(
            [*compiler, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(compiler)} failed on {SOURCE}: {done.stderr.strip()[-500:]}")
        os.replace(built, target)
    return target


@cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (with one warning saying why) where it cannot be built or loaded."""
    found = shutil.which("cc") or shutil.which("gcc")
    compiler = shlex.split(os.environ["CC"]) if os.environ.get("CC") else [found] if found else None
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (cc, gcc, or $CC)")
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("fused batch norm/max-pool/ReLU kernel unavailable, training uses torch's layers: %s", err)
        return None
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    lib.bn_pool_relu_forward.argtypes = [p, p, p, i32, i64, i64, i64, i64, i32, p, p, p, p, f64, f64, p, p, i32]
    lib.bn_pool_relu_backward.argtypes = [p, p, p, p, p, i32, i64, i64, i64, i64, i32, p, p, p, p, p, i32]
    lib.bn_pool_relu_forward.restype = lib.bn_pool_relu_backward.restype = lib.bn_pool_relu_max_channels.restype = i32
    return lib


def _args(*values) -> list:
    """The kernel's arguments: tensors by their data pointers, then the thread count torch uses."""
    return [v.data_ptr() if isinstance(v, Tensor) else v for v in values] + [torch.get_num_threads()]


class _BNPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(batch_norm(x), k)) in training; the module docstring says how."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, bn: nn.BatchNorm2d, k: int) -> Tensor:
        n, c, h, w = x.shape
        y = torch.empty((n, c, h // k, w // k), dtype=x.dtype, memory_format=torch.channels_last)
        argmax = torch.empty((n, h // k, w // k, c), dtype=torch.uint8)
        mean, invstd = torch.empty(c), torch.empty(c)
        stats = (bn.running_mean, bn.running_var, bn.momentum, bn.eps, mean, invstd)
        failed = library().bn_pool_relu_forward(
            *_args(x, y, argmax, _DTYPES[x.dtype], n, h, w, c, k, weight, bias, *stats)
        )
        if failed:
            raise ValueError(f"the fused batch norm kernel refused an input of shape {tuple(x.shape)}, pool {k}")
        bn.num_batches_tracked.add_(1)
        ctx.k = k
        ctx.save_for_backward(x, y, argmax, weight, mean, invstd)
        return y

    @staticmethod
    @once_differentiable  # its backward is a kernel of its own: a second derivative raises rather than being wrong
    def backward(ctx, grad: Tensor):
        x, y, argmax, weight, mean, invstd = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        gx = torch.empty_like(x, memory_format=torch.channels_last)
        gw, gb = torch.empty(c), torch.empty(c)
        failed = library().bn_pool_relu_backward(
            *_args(x, y, argmax, grad, gx, _DTYPES[x.dtype], n, h, w, c, ctx.k, weight, mean, invstd, gw, gb)
        )
        if failed:
            raise ValueError(f"the fused batch norm kernel refused a gradient for an input of shape {tuple(x.shape)}")
        return gx, gw, gb, None, None


def applies(x: Tensor, bn: nn.Module) -> bool:
    """Whether the fused kernel computes this step (the module docstring's contract)."""
    return (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # a compiled graph gets torch's layers, to fuse its own way
        and bn.training
        and type(bn) is nn.BatchNorm2d
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and x.device.type == "cpu"
        and x.dtype in _DTYPES
        and bn.weight.dtype == torch.float32
        and x.dim() == 4
        and x.shape[1] > 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and library() is not None
        and x.shape[1] <= library().bn_pool_relu_max_channels()
    )


def bn_pool_relu(x: Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d | None) -> Tensor:
    """relu(pool(bn(x))) (`pool` None: relu(bn(x))), fused where `applies`, else torch's modules."""
    if applies(x, bn):
        k = pool.kernel_size if pool is not None else 1
        return _BNPoolReLU.apply(x, bn.weight, bn.bias, bn, k if isinstance(k, int) else k[0])
    y = bn(x)
    return torch.relu_(pool(y) if pool is not None else y)


def fusable_blocks(body: nn.Sequential) -> list[tuple[nn.Module, nn.BatchNorm2d, nn.MaxPool2d | None]] | None:
    """`body` as (layer, batch norm, max-pool or None) blocks, where it is a run of layer → `BatchNorm2d` →
    [`MaxPool2d` with square windows that tile, of side at most 4] → `ReLU`; else None (the paper's order, with
    the ReLU before the pooling, is not fused)."""
    layers, blocks, i = list(body), [], 0
    while i < len(layers):
        rest = layers[i : i + 4]
        if len(rest) < 3 or not isinstance(rest[1], nn.BatchNorm2d):
            return None
        pool = rest[2] if isinstance(rest[2], nn.MaxPool2d) else None
        relu = rest[3] if pool is not None and len(rest) == 4 else rest[2]
        if not isinstance(relu, nn.ReLU):
            return None
        if pool is not None:
            k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
            if not (tiles(pool) and k[0] == k[1] <= 4):
                return None
        blocks.append((rest[0], rest[1], pool))
        i += 4 if pool is not None else 3
    return blocks
