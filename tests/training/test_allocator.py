"""Keeping freed memory (`glamor_lightning/allocator.py`, `callbacks.keep_freed_memory`): training steps no longer
fault their activations' pages in again, and training turns it on unless told not to."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import compose_config, linux_glibc
from glamor_lightning.allocator import glibc
from glamor_lightning.callbacks.allocator import KeepFreedMemory

# training steps of GLAMOR-Net (original backbone, batch 8): faults per step once warm
_PROGRAM = """
import json, resource, sys, torch
from glamor_lightning.allocator import keep_freed_memory
from glamor_lightning.models.glamor import GlamorNet
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = GlamorNet().to(memory_format=torch.channels_last)
face, context = torch.rand(8, 3, 96, 96), torch.rand(8, 3, 112, 112)
def step():
    net.zero_grad(set_to_none=True)
    net(face, context).logits.square().sum().backward()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(json.dumps({"applied": applied, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4}))
"""


def _faults_per_step(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_glibc
def test_training_steps_reuse_freed_memory_without_page_faults():
    default, kept = _faults_per_step("default"), _faults_per_step("keep")
    assert default["faults"] > 1000  # malloc gives the large activations back to the kernel every step
    assert kept["applied"] and kept["faults"] < 0.1 * default["faults"]


def test_the_callback_acts_when_fitting_unless_disabled():
    off = KeepFreedMemory(enabled=False)
    off.setup(None, None, "fit")
    assert off.applied is False
    on = KeepFreedMemory()
    on.setup(None, None, "validate")
    assert on.applied is False  # only a fit
    on.setup(None, None, "fit")
    assert on.applied is (glibc() is not None)


def test_training_keeps_freed_memory_by_default(tmp_path):
    cfg = compose_config("train", tmp_path)
    assert cfg.callbacks.keep_freed_memory.enabled is True
