"""Threads sized to the cores other programs leave free: the arithmetic, the meter against real busy programs
(this process's own children count as its own), and the callback in a real fit."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import compose_config
from glamor_lightning.callbacks.thread_sizer import ThreadSizer
from glamor_lightning.threads import CpuMeter, SizedThreads, own_ticks, threads_for
from training_helpers import BUSY, FAST, busy_elsewhere, fit, stop_programs

linux_only = pytest.mark.skipif(not CpuMeter().available, reason="reads /proc")


def test_threads_are_the_free_cores_at_least_one_at_most_the_start():
    assert threads_for(0.0, cores=2, most=2) == 2
    assert threads_for(0.4, cores=2, most=2) == 2  # a light background load keeps both
    assert threads_for(0.6, cores=2, most=2) == 1
    assert threads_for(1.99, cores=2, most=2) == 1  # beside another training
    assert threads_for(5.0, cores=2, most=2) == 1  # never 0
    assert threads_for(0.0, cores=16, most=4) == 4  # never more than the run started with


@linux_only
def test_this_process_counts_its_childrens_time_and_not_other_programs():
    """Loader workers are the training's own load; a program that is not its descendant is another's."""
    hz = os.sysconf("SC_CLK_TCK")
    before = own_ticks()
    child = subprocess.Popen([sys.executable, "-c", BUSY.format(s=1.5)])
    time.sleep(0.2)
    while child.poll() is None:
        mid = own_ticks()  # the child's ticks, read while it runs (a process that has ended has none to read)
        time.sleep(0.1)
    assert mid - before > 0.3 * hz, f"a busy child's {1.5} s showed as {(mid - before) / hz:.2f} s of this process"

    before = own_ticks()
    busy = busy_elsewhere(1, 1.5)
    time.sleep(1.5)
    after = own_ticks()
    stop_programs(busy)
    assert after - before < 0.3 * hz, f"another program's time counted as this one's: {(after - before) / hz:.2f} s"


def _quiet_or_skip(meter: CpuMeter) -> None:
    meter.other_cores()
    time.sleep(1.0)
    if (load := meter.other_cores()) is None or load > 0.3:
        pytest.skip(f"other programs keep {load} cores busy: this test needs a quiet machine")


@linux_only
def test_threads_drop_to_one_beside_busy_programs_and_come_back_when_they_end():
    start = torch.get_num_threads()
    most = max(2, start)
    sized = SizedThreads(every_s=0.5, most=most)
    _quiet_or_skip(sized.meter)
    try:
        torch.set_num_threads(most)
        busy = busy_elsewhere(sized.meter.cores, 1.5)
        sized.meter.other_cores()
        time.sleep(1.0)
        assert sized.tick() == (most, 1, pytest.approx(sized.meter.cores, abs=0.5 * sized.meter.cores))
        assert torch.get_num_threads() == 1
        time.sleep(1.0)  # the busy programs end
        stop_programs(busy)
        sized.meter.other_cores()
        time.sleep(0.6)
        assert sized.tick()[1] == most
        assert torch.get_num_threads() == most
    finally:
        torch.set_num_threads(start)


def test_every_s_must_be_positive():
    with pytest.raises(ValueError, match="every_s must be > 0"):
        ThreadSizer(every_s=0)


@linux_only
def test_a_fit_beside_busy_programs_runs_on_fewer_threads_and_gets_its_threads_back(synth_root, tmp_path):
    if torch.get_num_threads() < 2:
        pytest.skip("needs 2 torch threads to have one to give up")
    start = torch.get_num_threads()
    cfg = compose_config(
        "train", tmp_path, [f"data.root={synth_root}", *FAST, "trainer.max_epochs=1", "+trainer.limit_val_batches=0"]
    )
    sizer = ThreadSizer(every_s=0.3)
    busy = busy_elsewhere(CpuMeter().cores, 60.0)
    try:
        fit(cfg, [sizer])
    finally:
        stop_programs(busy)
    assert sizer.changes and sizer.changes[0] == (start, 1), sizer.changes
    assert torch.get_num_threads() == start


def test_the_default_callbacks_size_threads(tmp_path):
    cfg = compose_config("train", tmp_path)
    assert cfg.callbacks.thread_sizer.enabled is True
