"""Training beside a fixed CPU load: how much it slows down, against the fair share of the cores.

A user runs two things at once (two trainings side by side, a build, a browser). On a 2-core machine a
training whose torch threads spin-wait at every parallel region collapses when one of them is
descheduled: the issue measured 4.5× beside two single-threaded busy loops, where the fair share of the
cores predicts 2×. This section measures it: the same training steps (the original backbone, batch 32,
the training defaults bf16-mixed + channels-last, model only) in a fresh process, alone and then beside
`cores` busy loops (each a single-threaded Python `while True`), for each OpenMP wait policy, with the
loops placed two ways:

- *another program*: all the loops in one session of their own, as a program started from another terminal
  or by a service. Linux's scheduler with autogroup on (`/proc/sys/kernel/sched_autogroup_enabled`, the
  default of most distributions' kernels) shares the cores between sessions first, then between the
  threads of each: the training's session is owed half of the cores, however many threads the other has.
- *same session*: the loops started by the benchmark itself, as `prog & python -m ...train` in one shell:
  the cores are shared per thread, so T torch threads beside K busy ones on C cores get C·T/(T+K).

The fair slowdown is min(T, C) (what the training had alone) over the cores it is owed loaded (2× for
T = K = C = 2 either way). A slowdown near it means the training shares the cores; far above it, it
collapses. With autogroup off, both placements are shared per thread.

Each measurement runs in its own process because OpenMP reads its environment once, when torch loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import Settings, log, run_worker

#: set in a worker's environment: re-size its threads every this many seconds (`threads.SizedThreads`)
SIZED = "GLAMOR_BENCH_SIZED_EVERY_S"
#: the environments compared: OpenMP as torch ships it (libgomp: a waiting thread spins about 300,000 times
#: before it sleeps), PASSIVE (it sleeps at once) and shorter spins (GOMP_SPINCOUNT)
POLICIES = {
    "spin (OpenMP's default)": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "spin 10,000": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
    "spin 1,000": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"},
    # the default spin, with the threads re-sized every 2 s to the free cores (`callbacks.thread_sizer`)
    "sized threads": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, SIZED: "2"},
}


#: where the busy loops run (module docstring)
PLACEMENTS = ("another program", "same session")


def autogroup_enabled() -> bool | None:
    """Whether the kernel shares the cores between sessions first (None: not Linux, or not readable)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def fair_slowdown(threads: int, busy: int, cores: int, per_session: bool = False) -> float:
    """The slowdown a training of `threads` threads should see beside `busy` busy threads on `cores`: shared
    per thread, or (`per_session`) between two sessions first, the busy threads being the other one."""
    alone = min(threads, cores)
    if per_session:
        loaded = min(alone, cores - min(busy, cores / 2))
    else:
        loaded = cores * threads / (threads + busy) if threads + busy > cores else alone
    return alone / loaded


def _worker(steps: int, batch: int, threads: int | None) -> None:
    """Time `steps` training steps (after 3 untimed) and print images/s as JSON (in the subprocess)."""
    import torch

    from benchmarks.common import TrainStep, make_module, random_batch
    from glamor_lightning.threads import SizedThreads

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    step = TrainStep(make_module("original", channels_last=True, device=device), "bf16-mixed", device)
    face, context, target = random_batch(batch, device)
    start_threads = torch.get_num_threads()
    sized = SizedThreads(float(os.environ[SIZED])) if os.environ.get(SIZED) else None
    for _ in range(3):
        step(face, context, target)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(face, context, target)
        if sized is not None:
            sized.tick()
    seconds = time.perf_counter() - t0
    print(
        json.dumps({"ips": steps * batch / seconds, "threads": start_threads, "threads_end": torch.get_num_threads()})
    )


def _run_worker(env_over: dict, steps: int, batch: int) -> dict:
    return run_worker("benchmarks.contention", [str(steps), str(batch)], env_over)


#: one busy program: its process loops, after starting argv[1] - 1 more looping processes (all in its session);
#: on SIGTERM it kills and reaps them, then exits
_PROGRAM = """
import signal, subprocess, sys
loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(int(sys.argv[1]) - 1)]
def stop(*_):
    for p in loops:
        p.kill()
        p.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    pass
"""


@contextlib.contextmanager
def busy_loops(n: int, placement: str) -> Iterator[int]:
    """`n` single-threaded busy loops, running until the block ends, in a session of their own (`another
    program`) or as children in this one (`same session`). Yields the loops' session id."""
    if placement == "another program":
        procs = [subprocess.Popen([sys.executable, "-c", _PROGRAM, str(n)], start_new_session=True)]
    elif placement == "same session":
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    else:
        raise ValueError(f"unknown placement {placement!r}; known: {', '.join(PLACEMENTS)}")
    try:
        time.sleep(0.5)  # the loops are running before the training starts
        yield os.getsid(procs[0].pid)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if placement == "another program":  # any loop left behind by a leader killed before it could stop them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(procs[0].pid, signal.SIGKILL)


def run(s: Settings) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    steps = 4 if s.quick else 40
    busy = cores
    autogroup = autogroup_enabled()
    out: dict = {
        "cores": cores,
        "busy_threads": busy,
        "steps": steps,
        "batch": s.batch,
        "autogroup": autogroup,
        "policies": {},
    }
    for name, env_over in POLICIES.items():
        alone = _run_worker(env_over, steps, s.batch)
        threads = alone["threads"]
        entry: dict = {"alone_ips": alone["ips"], "threads": threads, "placements": {}}
        for placement in PLACEMENTS:
            with busy_loops(busy, placement):
                loaded = _run_worker(env_over, steps, s.batch)
            fair = fair_slowdown(threads, busy, cores, per_session=bool(autogroup) and placement == "another program")
            slowdown = alone["ips"] / loaded["ips"]
            entry["placements"][placement] = {
                "loaded_ips": loaded["ips"],
                "threads_loaded_end": loaded.get("threads_end", threads),  # what a sized run ended at under load
                "slowdown": slowdown,
                "fair_slowdown": fair,
                "over_fair": slowdown / fair,
            }
            log(
                f"contention {name:22s} alone {alone['ips']:6.1f} img/s, beside {busy} busy threads "
                f"({placement}) {loaded['ips']:6.1f} img/s: {slowdown:.2f}x (fair share {fair:.2f}x); threads "
                f"{threads} -> {loaded.get('threads_end', threads)} under load"
            )
        out["policies"][name] = entry
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]), None)
    else:
        import torch

        print(json.dumps(run(Settings.make(torch.device("cpu"))), indent=1))
