"""What `torch.compile` (`model.compile`) buys the training step: the original model compiled in place as
`EmotionModule.configure_model` does it, against the same model eager, in one process, repeats alternated; and what
the compilation costs, as the first call's seconds with an empty compile cache and again in a second process that
finds the first one's cache on disk (inductor's FX-graph and kernel caches, `TORCHINDUCTOR_CACHE_DIR`).

Each precision runs in fresh processes, with a temporary cache folder of its own, so that neither an earlier
section's compiled code nor the user's own cache decides the figures. Model-only training steps (`TrainStep`, uint8
batch in memory), channels-last, as training runs by default. `--quick` compiles with `aot_eager` (traced, no code
generated: seconds, not a minute) to test the mechanics; its figures mean nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time

from benchmarks.common import Settings, log, run_worker

BACKBONE = "original"  #: the model issue 20 measures; each compilation takes 35-50 s on 2 cores
PRECISIONS = ("32-true", "bf16-mixed")


def _worker(precision: str, batch: int, backend: str, repeats: int, quick: bool, first_only: bool) -> None:
    """Print as JSON the first compiled call's seconds and, unless `first_only`, images/s of each repeat of eager and
    compiled steps (`common.measure_interleaved`: warm-up, then repeats alternated)."""
    from glamor_lightning.allocator import keep_freed_memory

    keep_freed_memory()  # as training does
    import torch

    from benchmarks.common import TrainStep, make_module, measure_interleaved, random_batch

    device = torch.device("cpu")
    steps = {}
    for name in ("compiled",) if first_only else ("eager", "compiled"):
        torch.manual_seed(0)
        module = make_module(BACKBONE, channels_last=True, device=device)
        if name == "compiled":
            module.net.compile(backend=backend)  # what `model.compile` does (EmotionModule.configure_model)
        steps[name] = TrainStep(module, precision, device)
    face, context, target = random_batch(batch, device)
    t0 = time.perf_counter()
    steps["compiled"](face, context, target)
    out: dict = {"first_call_s": time.perf_counter() - t0}
    if not first_only:
        s = Settings.make(device, quick=quick, repeats=repeats, batch=batch)
        timings = measure_interleaved(
            {name: (lambda step=step: step(face, context, target)) for name, step in steps.items()}, batch, s
        )
        out.update({name: t.samples for name, t in timings.items()})
    print(json.dumps(out))


def run(s: Settings) -> dict:
    """{"backbone", "batch", "backend", "precisions": {precision: {"eager": img/s, "compiled": img/s, "speedup":
    median of the rounds' compiled / eager, "rounds": [...], "first_call_s", "first_call_warm_cache_s"}}}."""
    backend = "aot_eager" if s.quick else "inductor"
    out: dict = {"backbone": BACKBONE, "batch": s.batch, "backend": backend, "precisions": {}}
    for precision in PRECISIONS[:1] if s.quick else PRECISIONS:
        with tempfile.TemporaryDirectory(prefix="glamor-bench-compile-") as cache:
            env = {"TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"}
            args = [precision, str(s.batch), backend, str(s.repeats), str(int(s.quick))]
            cold = run_worker("benchmarks.compiled", [*args, "0"], env)
            warm = run_worker("benchmarks.compiled", [*args, "1"], env)
        ratios = [c / e for c, e in zip(cold["compiled"], cold["eager"])]
        fig = {
            "eager": statistics.median(cold["eager"]),
            "compiled": statistics.median(cold["compiled"]),
            "speedup": statistics.median(ratios),
            "rounds": [round(r, 3) for r in ratios],
            "first_call_s": cold["first_call_s"],
            "first_call_warm_cache_s": warm["first_call_s"],
        }
        out["precisions"][precision] = fig
        log(
            f"compile {BACKBONE} {precision:10s} ({backend}): eager {fig['eager']:.1f}, compiled {fig['compiled']:.1f} "
            f"img/s, {fig['speedup']:.2f}x; first call {fig['first_call_s']:.0f} s, "
            f"{fig['first_call_warm_cache_s']:.0f} s with the cache warm"
        )
    return out


def table_lines(doc: dict) -> list[str]:
    """The section of `make bench`'s table."""
    lines = [
        f"## `torch.compile` ({doc['backend']}) of the training step against eager ({doc['backbone']}, model-only, "
        "channels-last; repeats alternated)",
        "",
        f"Batch {doc['batch']}; the speedup is the median of the rounds' compiled / eager; the first call compiles, "
        "with an empty cache and again in a second process with the first one's cache on disk:",
        "",
        "| precision | eager img/s | compiled img/s | speedup | first call (s) | first call, cache warm (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for precision, f in doc["precisions"].items():
        lines.append(
            f"| {precision} | {f['eager']:.1f} | {f['compiled']:.1f} | {f['speedup']:.2f}× | "
            f"{f['first_call_s']:.0f} | {f['first_call_warm_cache_s']:.0f} |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        precision, batch, backend, repeats, quick, first_only = sys.argv[2:8]
        _worker(precision, int(batch), backend, int(repeats), quick == "1", first_only == "1")
    else:
        import torch

        print(json.dumps(run(Settings.make(torch.device("cpu"))), indent=1))
