"""What the rewrites of the encoders buy: each model as it trains, against the same modules with one rewrite undone,
in one run, repeats alternated. Each computes the same maths: bit for bit (tests/models/test_encoders.py), or, for the
strided depthwise backward and the fused kernel, to rounding (tests/models/test_depthwise.py, test_fused_bn.py).
The original encoder's first two rewrites run where the fused kernel does not (it replaces those layers in CPU
training: `model.fused_bn_pool_relu=false`, or no C compiler), so they are timed with the kernel off on both sides.

- `original`, pool before ReLU: `OriginalEncoder` runs conv → BN → max-pool → ReLU, the paper conv → BN → ReLU →
  max-pool (`encoders.paper_order`): the ReLU and its backward touch a quarter of the values.
- `mobilenetv2`, ReLU6 out of place: timm builds it in place, for which autograd clones every input
  (`encoders.set_hardtanh_inplace`).
- `mobilenetv2`, strided depthwise backward: in bf16 on the CPU the input gradient of its four stride-2 depthwise
  convolutions per encoder comes from a stride-1 convolution (`models/depthwise.py`); fp32 is torch's own.
- `original`, max-pool backward by unpooling: in bf16 on the CPU the backward of its 2×2 pools is `max_unpool2d` at
  the forward's indices (`models/maxpool.py`); fp32 is torch's own.
- `original`, BN → max-pool → ReLU as one kernel: in CPU training each block's three layers run as one C kernel,
  two passes over the batch norm's input each way (`models/fused_bn.py`; the same maths to rounding,
  tests/models/test_fused_bn.py); undone, they are torch's layers with the two rewrites above.

Model-only training steps (`TrainStep`, uint8 batch in memory), channels-last, in fp32 and bf16-mixed.
"""

from __future__ import annotations

import copy
import gc

import torch

from benchmarks.common import Settings, TrainStep, log, make_module, measure_interleaved, random_batch
from glamor_lightning.models.depthwise import use_fast_strided_depthwise
from glamor_lightning.models.encoders import paper_order, set_hardtanh_inplace, use_fused_bn_pool_relu
from glamor_lightning.models.maxpool import use_fast_max_pool

PRECISIONS = ("32-true", "bf16-mixed")


def _undo_pool_first(module) -> None:
    for encoder in (module.net.face_encoder, module.net.context_encoder):
        if encoder is not None:
            encoder.body = paper_order(encoder)


def _undo_out_of_place(module) -> None:
    set_hardtanh_inplace(module, True)


def _undo_strided_depthwise(module) -> None:
    use_fast_strided_depthwise(module, enable=False)


def _undo_tiling_max_pool(module) -> None:
    use_fast_max_pool(module, enable=False)


def _undo_fused_bn_pool_relu(module) -> None:
    use_fused_bn_pool_relu(module, enable=False)


def _as_trained(module) -> None:
    pass


#: (backbone, what the rewrite is, how to undo it on a module, what both sides run with)
REWRITES = (
    ("original", "max-pool before ReLU", _undo_pool_first, _undo_fused_bn_pool_relu),
    ("original", "max-pool backward by unpooling", _undo_tiling_max_pool, _undo_fused_bn_pool_relu),
    ("original", "BN, max-pool and ReLU as one kernel", _undo_fused_bn_pool_relu, _as_trained),
    ("mobilenetv2", "ReLU6 out of place", _undo_out_of_place, _as_trained),
    ("mobilenetv2", "strided depthwise backward", _undo_strided_depthwise, _as_trained),
)


def run(s: Settings) -> dict:
    """{backbone: {rewrite: {precision: {"as_trained": img/s, "undone": img/s, "speedup": ratio}}}}."""
    out: dict = {}
    for backbone, what, undo, base in REWRITES:
        if backbone not in s.backbones:
            continue
        entry = out.setdefault(backbone, {})[what] = {}
        for precision in PRECISIONS:
            torch.manual_seed(s.seed)
            trained = make_module(backbone, channels_last=True, device=s.device)
            base(trained)
            undone = copy.deepcopy(trained)
            undo(undone)
            steps = {
                "as_trained": TrainStep(trained, precision, s.device),
                "undone": TrainStep(undone, precision, s.device),
            }
            face, context, target = random_batch(s.batch, s.device, seed=s.seed)
            timings = measure_interleaved(
                {name: (lambda step=step: step(face, context, target)) for name, step in steps.items()}, s.batch, s
            )
            fig = {name: t.median for name, t in timings.items()}
            fig["speedup"] = fig["as_trained"] / fig["undone"]
            entry[precision] = fig
            log(
                f"rewrites {backbone:12s} {precision:10s} {what}: {fig['as_trained']:.1f} img/s, undone "
                f"{fig['undone']:.1f}: {fig['speedup']:.2f}x"
            )
            trained = undone = steps = None
            gc.collect()
    return out


def table_lines(doc: dict) -> list[str]:
    """The section of `make bench`'s table."""
    lines = [
        "## Rewrites of the encoders (model-only training, channels-last; repeats alternated)",
        "",
        "| backbone | rewrite | precision | as trained img/s | rewrite undone img/s | speedup |",
        "|---|---|---|---:|---:|---:|",
    ]
    for backbone, rewrites in doc.items():
        for what, entry in rewrites.items():
            for precision in PRECISIONS:
                if precision in entry:
                    f = entry[precision]
                    lines.append(
                        f"| {backbone} | {what} | {precision} | {f['as_trained']:.1f} | {f['undone']:.1f} | "
                        f"{f['speedup']:.2f}× |"
                    )
    return [*lines, ""]
