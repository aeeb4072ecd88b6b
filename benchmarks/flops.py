"""Parameters and FLOPs per image per backbone, and the machine's measured matmul peak.

FLOPs come from torch's own counter (`torch.utils.flop_counter.FlopCounterMode`) over one forward
pass at batch 1 (a multiply-add counts 2); a training step costs about 3× the forward (forward,
plus the backward's two products per layer). The peak is what a large `torch.matmul` achieves on
this device in fp32 and in bf16: the practical ceiling against which a model's achieved FLOP/s
(training FLOPs × images/s) is a utilisation.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Settings, log, make_module, random_batch, sync


def model_cost(backbone: str) -> dict:
    """Trainable parameters and forward GFLOPs per image (batch 1, fp32, eval mode, on the CPU)."""
    module = make_module(backbone, channels_last=False, device=torch.device("cpu")).eval()
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    face, context, _ = random_batch(1, torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(face, context)
    fwd = counter.get_total_flops()
    return {"params": int(params), "forward_gflops_per_image": fwd / 1e9, "train_gflops_per_image": 3 * fwd / 1e9}


def matmul_peak(s: Settings) -> dict:
    """GFLOP/s of a square torch.matmul in fp32 and bf16: the best of the repeats after warm-up.

    On a GPU fp32 means true fp32 (torch's default: TF32 off for matmul)."""
    n = 8192 if s.device.type == "cuda" else (512 if s.quick else 2048)
    out = {"matmul_n": n}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=s.device, dtype=dtype)
        b = torch.randn(n, n, device=s.device, dtype=dtype)
        times = []
        for i in range(2 + s.repeats):  # two warm-up products first
            sync(s.device)
            start = time.perf_counter()
            torch.matmul(a, b)
            sync(s.device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        times.sort()
        # the peak is the best repeat (a physical ceiling); the median shows how steady it was
        out[f"{name}_gflops"] = 2 * n**3 / times[0] / 1e9
        out[f"{name}_gflops_median"] = 2 * n**3 / times[len(times) // 2] / 1e9
    log(f"matmul peak: fp32 {out['fp32_gflops']:.0f} GFLOP/s, bf16 {out['bf16_gflops']:.0f} GFLOP/s (n={n})")
    return out


def run(s: Settings) -> dict:
    costs = {}
    for backbone in s.backbones:
        costs[backbone] = model_cost(backbone)
        log(
            f"{backbone}: {costs[backbone]['params']:,} parameters, "
            f"{costs[backbone]['forward_gflops_per_image']:.3f} forward GFLOPs/image"
        )
    return {"peak": matmul_peak(s), "costs": costs}
