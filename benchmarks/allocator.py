"""What keeping freed memory in the process buys (`glamor_lightning/allocator.py`): the same training steps in fresh
processes, with malloc's defaults and after `keep_freed_memory`, alternated; images/s, minor page faults per step
and the peak resident memory of each.

Each measurement runs in its own process because malloc's settings are process-wide and its thresholds move with
what the process has freed before; this benchmark process itself keeps freed memory from the start (`run.py`), as
training does, so that its other sections measure what training gets.

Model-only training steps (`TrainStep`, uint8 batch in memory), channels-last, in fp32 and bf16-mixed.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

from benchmarks.common import Settings, log, run_worker

MODES = ("malloc's defaults", "keep freed memory")
PRECISIONS = ("32-true", "bf16-mixed")


def _worker(backbone: str, precision: str, keep: bool, steps: int, batch: int) -> None:
    """Time `steps` training steps (after 3 untimed) and print images/s, faults per step and peak RSS as JSON."""
    if keep:
        from glamor_lightning.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("the allocator section needs glibc's malloc (Linux)")
    import torch

    from benchmarks.common import TrainStep, make_module, random_batch

    torch.manual_seed(0)
    device = torch.device("cpu")
    step = TrainStep(make_module(backbone, channels_last=True, device=device), precision, device)
    face, context, target = random_batch(batch, device)
    for _ in range(3):
        step(face, context, target)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        step(face, context, target)
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"ips": steps * batch / seconds, "faults_per_step": faults / steps, "peak_rss_mb": _peak_mb()}))


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not `ru_maxrss`: that survives `exec`, so a worker would report
    at least the resident memory of the process that spawned it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run_worker(backbone: str, precision: str, keep: bool, steps: int, batch: int) -> dict:
    return run_worker("benchmarks.allocator", [backbone, precision, str(int(keep)), str(steps), str(batch)])


def run(s: Settings) -> dict:
    """{backbone: {precision: {mode: {"ips", "faults_per_step", "peak_rss_mb"}, "speedup": ratio}}}: medians of
    the alternated processes."""
    # 8 steps even in quick mode: the first steps after warm-up still grow the kept heap by a few hundred pages
    # (2 steps measured 0.5-508 faults/step kept against 286-1448 with the defaults, overlapping; 8 steps
    # 0-194 against 1424-3003), and a smoke test must not fail on that
    steps = 8
    repeats = 1 if s.quick else max(1, min(s.repeats, 3))
    out: dict = {"steps": steps, "batch": s.batch, "processes_per_figure": repeats, "backbones": {}}
    for backbone in s.backbones:
        for precision in PRECISIONS:
            runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for _ in range(repeats):
                for mode in MODES:
                    runs[mode].append(_run_worker(backbone, precision, mode == MODES[1], steps, s.batch))
            fig = {
                mode: {k: statistics.median([r[k] for r in rs]) for k in ("ips", "faults_per_step", "peak_rss_mb")}
                for mode, rs in runs.items()
            }
            fig["speedup"] = fig[MODES[1]]["ips"] / fig[MODES[0]]["ips"]
            out["backbones"].setdefault(backbone, {})[precision] = fig
            d, k = fig[MODES[0]], fig[MODES[1]]
            log(
                f"allocator {backbone:12s} {precision:10s} defaults {d['ips']:.1f} img/s, "
                f"{d['faults_per_step']:.0f} faults/step; kept {k['ips']:.1f} img/s, {k['faults_per_step']:.0f} "
                f"faults/step: {fig['speedup']:.2f}x"
            )
    return out


def _mb(fig: dict) -> str:
    peak = fig.get("peak_rss_mb")
    return "–" if peak is None else f"{peak:,.0f}"


def table_lines(doc: dict) -> list[str]:
    """The section of `make bench`'s table."""
    lines = [
        "## Keeping freed memory (model-only training, channels-last; fresh processes alternated)",
        "",
        f"Batch {doc['batch']}, {doc['steps']} timed steps per process, median of {doc['processes_per_figure']} "
        "processes per figure:",
        "",
        "| backbone | precision | defaults img/s | faults/step | peak MB | kept img/s | faults/step | peak MB "
        "| speedup |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backbone, by_precision in doc["backbones"].items():
        for precision, f in by_precision.items():
            d, k = f[MODES[0]], f[MODES[1]]
            lines.append(
                f"| {backbone} | {precision} | {d['ips']:.1f} | {d['faults_per_step']:,.0f} | {_mb(d)} "
                f"| {k['ips']:.1f} | {k['faults_per_step']:,.0f} | {_mb(k)} | {f['speedup']:.2f}× |"
            )
    return [*lines, ""]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        b, p, keep, n, batch = sys.argv[2:7]
        _worker(b, p, keep == "1", int(n), int(batch))
    else:
        import torch

        print(json.dumps(run(Settings.make(torch.device("cpu"))), indent=1))
