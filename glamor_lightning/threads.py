"""Torch threads sized to the cores this process really gets, while it runs.

Beside other CPU-bound programs a training with one thread per core collapses rather than slows down: its
OpenMP threads wait for each other at every parallel region, and one of them is always descheduled. On 2
cores beside two busy threads the original model's training step ran 4.8x slower than alone, where the
share of the cores predicts 2x (`make bench`, contention section). Fewer threads than cores then go faster.

`CpuMeter` reads how busy the machine's cores were since its last reading, and how much of that was this
process (and its children, e.g. loader workers): the rest is other programs' load. `threads_for` turns the
cores they leave free into a thread count. Linux only (/proc); elsewhere the meter reads nothing and the
threads stay as they are. A load average would not do: it lags by a minute, and sizes a run by the one that
just ended before it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def check_every_s(every_s: float) -> float:
    """The re-sizing period in seconds, refused unless positive."""
    if not every_s > 0:
        raise ValueError(f"thread_sizer.every_s must be > 0 seconds, got {every_s}")
    return float(every_s)


def threads_for(other_cores: float, cores: int, most: int) -> int:
    """Threads for the cores other programs leave free: round(cores - other_cores), between 1 and `most`."""
    return max(1, min(most, int(cores - other_cores + 0.5)))


def _busy_and_total(cpus: frozenset[int] | None = None) -> tuple[int, int]:
    """(busy, total) clock ticks since boot of the cores `cpus` (all of them: None), from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        fields = [int(x) for x in values]
        t = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        busy, total = busy + t - fields[3] - fields[4], total + t  # minus idle and iowait
    return busy, total


def _ticks(pid: str) -> int:
    """User + system clock ticks of one process (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _children(pid: str) -> list[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += (task / "children").read_text().split()
    return out


def own_ticks() -> int:
    """Clock ticks of this process and its descendants (loader workers count as this training's)."""
    todo, total, seen = [str(os.getpid())], 0, set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += _ticks(pid)
            todo += _children(pid)
        except (OSError, ValueError, IndexError):
            pass  # a child that just ended
    return total


class CpuMeter:
    """How many of this process's cores other programs kept busy since the last `other_cores()` call.

    Only the cores this process may run on count (its CPU affinity): in a container pinned to 2 cores of a
    larger machine, the other cores' load is not this process's business."""

    def __init__(self) -> None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self.cpus = frozenset(cpus) if cpus else None
        self.cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)  #: the cores this process may use
        self.available = Path("/proc/stat").is_file()
        self._last = self._read() if self.available else None

    def _read(self) -> tuple[int, int, int]:
        busy, total = _busy_and_total(self.cpus)
        return busy, total, own_ticks()

    def other_cores(self) -> float | None:
        """Cores' worth of other programs' CPU time since the last call (None where /proc cannot tell)."""
        if not self.available:
            return None
        now = self._read()
        (busy0, total0, own0), self._last = self._last, now
        d_total = now[1] - total0
        if d_total <= 0:
            return None
        other = max(0, (now[0] - busy0) - (now[2] - own0))
        return other * self.cores / d_total


class SizedThreads:
    """Keeps torch's CPU threads at the cores other programs leave free: call `tick()` often (e.g. after every
    training step); every `every_s` seconds it measures and re-sizes. `most`: the most threads to use (default:
    torch's count at the start, which `restore()` sets back)."""

    def __init__(self, every_s: float = 5.0, most: int | None = None, meter: CpuMeter | None = None) -> None:
        import torch

        self.torch, self.every_s = torch, check_every_s(every_s)
        self.start = torch.get_num_threads()
        self.most = int(most or self.start)
        self.meter = meter or CpuMeter()
        self._last = time.monotonic()

    def tick(self) -> tuple[int, int, float] | None:
        """(threads before, threads now, other programs' cores) when this call changed the threads, else None."""
        now = time.monotonic()
        if now - self._last < self.every_s:
            return None
        self._last = now
        other = self.meter.other_cores()
        if other is None:
            return None
        before, threads = self.torch.get_num_threads(), threads_for(other, self.meter.cores, self.most)
        if threads == before:
            return None
        self.torch.set_num_threads(threads)
        return before, threads, other

    def restore(self) -> None:
        if self.torch.get_num_threads() != self.start:
            self.torch.set_num_threads(self.start)
