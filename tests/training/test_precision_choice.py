"""`trainer.precision=auto`: the faster precision by measurement, remembered per machine and setting, recorded in
the run's config and checkpoint, and reproduced by `eval`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import compose_config, linux_glibc
from glamor_lightning import precision_choice
from glamor_lightning.checkpoints import read_checkpoint
from glamor_lightning.module import EmotionModule
from glamor_lightning.precision_choice import (
    AUTO,
    CANDIDATES,
    PRECISION_KEY,
    cache_file,
    checkpoint_precision,
    choose,
    native_bf16,
    resolve_precision,
    trainer_processes,
    unmeasured_precision,
)
from glamor_lightning.threads import CpuMeter
from glamor_lightning.train import train
from training_helpers import FAST, busy_elsewhere, run_module, stop_programs

CPU = torch.device("cpu")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh cache file; measurements are remembered whatever the machine's load (the load test sets it back)."""
    monkeypatch.setenv("GLAMOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_choice, "BUSY_CORES", float("inf"))
    return tmp_path / "cache"


def test_the_faster_precision_wins_and_a_tie_goes_to_fp32():
    assert choose({"32-true": 60.0, "bf16-mixed": 120.0}) == "bf16-mixed"
    assert choose({"32-true": 76.5, "bf16-mixed": 68.2}) == "32-true"  # MobileNetV2 on AMD, make bench
    assert choose({"32-true": 100.0, "bf16-mixed": 104.0}) == "32-true"  # within 5 %: the exact one
    assert choose({"32-true": 100.0, "bf16-mixed": 106.0}) == "bf16-mixed"


def test_a_setting_is_measured_once_then_read_from_the_cache(cache_dir):
    module = EmotionModule(backbone="original", hidden=16)
    first = resolve_precision(module, 2, 32, 40, CPU, block_s=0.05)
    assert first.source == "measured" and set(first.images_per_s) == set(CANDIDATES)
    assert all(r > 0 for r in first.images_per_s.values())
    assert first.precision == choose(first.images_per_s)
    assert cache_file() == cache_dir / "precision.json"
    (machine,) = json.loads(cache_file().read_text()).values()
    (setting,) = machine
    assert "backbone=original" in setting and "batch=2" in setting and "context=40" in setting

    again = resolve_precision(module, 2, 32, 40, CPU, block_s=0.05)
    assert again.source == "cache" and again.precision == first.precision
    assert again.images_per_s == pytest.approx(first.images_per_s, abs=0.01)

    other_batch = resolve_precision(module, 3, 32, 40, CPU, block_s=0.05)
    assert other_batch.source == "measured"
    assert len(next(iter(json.loads(cache_file().read_text()).values()))) == 2


def test_a_measurement_remembered_before_a_speed_change_of_ours_is_taken_again(cache_dir, monkeypatch):
    """A choice remembered before a change that moved a setting's speed (e.g. MobileNetV2's bf16 step, 1.4x) would
    keep the old, now slower, precision forever."""
    module = EmotionModule(backbone="original", hidden=16)
    assert resolve_precision(module, 2, 32, 40, CPU, block_s=0.05).source == "measured"
    assert resolve_precision(module, 2, 32, 40, CPU, block_s=0.05).source == "cache"
    monkeypatch.setattr(precision_choice, "SPEED_REVISION", precision_choice.SPEED_REVISION + 1)
    assert resolve_precision(module, 2, 32, 40, CPU, block_s=0.05).source == "measured"
    assert len(json.loads(cache_file().read_text())) == 2  # one entry per revision; the old one is not read


def test_measuring_leaves_the_model_and_the_random_stream_untouched(cache_dir):
    """A run that measures must train exactly as one that reads the cache."""
    module = EmotionModule(backbone="original", hidden=16, dropout=0.5)
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    resolve_precision(module, 2, 32, 40, CPU, block_s=0.05)
    assert torch.equal(torch.rand(4), expected)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in weights.items())


def test_a_damaged_cache_file_is_measured_again_and_rewritten(cache_dir):
    cache_dir.mkdir()
    cache_file().write_text("{ not json")
    choice = resolve_precision(EmotionModule(backbone="original", hidden=16), 2, 32, 40, CPU, block_s=0.05)
    assert choice.source == "measured"
    assert json.loads(cache_file().read_text())


@pytest.mark.skipif(not CpuMeter().available, reason="reads /proc")
def test_a_measurement_beside_other_programs_decides_the_run_but_is_not_remembered(cache_dir, monkeypatch):
    monkeypatch.setattr(precision_choice, "BUSY_CORES", 0.5)
    busy = busy_elsewhere(CpuMeter().cores, 30.0)
    try:
        choice = resolve_precision(
            EmotionModule(backbone="original", hidden=16), 2, 32, 40, CPU, block_s=0.2
        )  # a window of seconds
    finally:
        stop_programs(busy)
    assert (choice.source, choice.precision) == ("busy", choose(choice.images_per_s))
    assert choice.other_cores > 0.5 and "not remembered" in choice.describe()
    assert not cache_file().exists()


def test_a_smoke_run_takes_what_is_remembered_and_otherwise_does_not_measure(cache_dir):
    module = EmotionModule(backbone="original", hidden=16)
    smoke = resolve_precision(module, 2, 32, 40, CPU, smoke=True)
    assert (smoke.precision, smoke.source, smoke.images_per_s) == ("32-true", "smoke", {})
    assert not cache_file().exists() and "fast_dev_run" in smoke.describe()
    measured = resolve_precision(module, 2, 32, 40, CPU, block_s=0.05)
    remembered = resolve_precision(module, 2, 32, 40, CPU, smoke=True)
    assert (remembered.precision, remembered.source) == (measured.precision, "cache")
    assert remembered.images_per_s == pytest.approx(measured.images_per_s, abs=0.01)


def test_several_processes_do_not_measure(cache_dir):
    choice = resolve_precision(EmotionModule(backbone="original", hidden=16), 2, 32, 40, CPU, processes=2, block_s=0.05)
    assert (choice.precision, choice.source) == (unmeasured_precision(CPU), "multi-process")
    assert not cache_file().exists() and "not measured" in choice.describe()


# /proc/cpuinfo of the three CPU kinds this project has run on (flags shortened to the ones around bf16)
EPYC_ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
XEON_AMX = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
XEON_HIDDEN = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bitalg\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (EPYC_ZEN4, "bf16-mixed"),
        (XEON_AMX, "bf16-mixed"),
        (XEON_HIDDEN, "32-true"),
        (ARM_BF16, "bf16-mixed"),
        ("", "32-true"),
    ],
)
def test_several_processes_train_in_bf16_only_where_the_cpu_computes_it_natively(cpuinfo, expected):
    # the Xeon whose bf16 instructions are hidden ran bf16 matmuls at a quarter of fp32's rate (2026-12-01)
    assert native_bf16(CPU, cpuinfo) == (expected == "bf16-mixed")
    assert unmeasured_precision(CPU, cpuinfo) == expected


@pytest.mark.parametrize(
    ("trainer", "env", "expected"),
    [
        ({"devices": 1}, {}, 1),
        ({"devices": "auto", "accelerator": "cpu"}, {}, 1),
        ({"devices": 2, "num_nodes": 2}, {}, 4),
        ({"devices": [0, 1]}, {}, 2),
        ({"devices": "2"}, {}, 2),
        ({"devices": 1}, {"WORLD_SIZE": "4"}, 4),
    ],
)
def test_processes_of_a_trainer_config(trainer, env, expected, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert trainer_processes(OmegaConf.create(trainer), CPU) == expected


def test_checkpoints_made_before_the_record_are_tested_in_the_default_of_their_time():
    assert checkpoint_precision({}) == "bf16-mixed"
    assert checkpoint_precision({PRECISION_KEY: "32-true"}) == "32-true"


def test_auto_is_the_default_and_a_run_records_what_it_chose(synth_root, tmp_path, cache_dir):
    """The saved config (read by the results tables) and the checkpoint name a real precision, never `auto`;
    `eval` under `auto` tests in the checkpoint's precision and reproduces the run's test accuracy."""
    from glamor_lightning.eval import evaluate

    assert compose_config("train", tmp_path / "c")["trainer"]["precision"] == AUTO
    assert compose_config("eval", tmp_path / "e", ["ckpt_path=x"])["trainer"]["precision"] == AUTO
    fast = [o for o in FAST if not o.startswith("trainer.precision")]
    out = tmp_path / "run"
    cfg = compose_config("train", out, [f"data.root={synth_root}", *fast, "trainer.max_epochs=1", "model.hidden=16"])
    metrics = train(cfg)
    (setting,) = next(iter(json.loads(cache_file().read_text()).values())).values()
    chosen = choose(setting)
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["config"]["trainer"]["precision"] == chosen
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt[PRECISION_KEY] == chosen

    eval_cfg = compose_config(
        "eval", tmp_path / "eval", [f"ckpt_path={out / 'checkpoints' / 'epoch_000.ckpt'}", "logger=csv"]
    )
    assert evaluate(eval_cfg)["test/acc"] == metrics["test/acc"]
    assert eval_cfg.trainer.precision == chosen


def test_a_resumed_run_goes_on_in_the_precision_it_started_in(synth_root, tmp_path, cache_dir):
    fast = [o for o in FAST if not o.startswith("trainer.precision")]
    out = tmp_path / "run"
    common = [f"data.root={synth_root}", *fast, "model.hidden=16"]
    train(compose_config("train", out, [*common, "trainer.max_epochs=1", "trainer.precision=32-true"]))
    resume = [*common, "trainer.max_epochs=2", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"]
    train(compose_config("train", out, resume))  # trainer.precision=auto, the default
    assert yaml.safe_load((out / "csv" / "hparams.yaml").read_text())["config"]["trainer"]["precision"] == "32-true"
    assert read_checkpoint(out / "checkpoints" / "last.ckpt")[PRECISION_KEY] == "32-true"
    assert not cache_file().exists()  # nothing measured


@linux_glibc
def test_auto_times_the_steps_with_freed_memory_kept_as_the_training_will(synth_root, tmp_path, cache_dir):
    """`callbacks.keep_freed_memory` acts when the fit starts, after `auto` has timed its steps; so the entry point
    keeps freed memory before it times them (it speeds a bf16 step up to 1.11x, an fp32 one less: timed without
    it, the choice leaned to fp32). A fresh process: malloc's setting is process-wide and never undone."""
    fast = [o for o in FAST if not o.startswith("trainer.precision")]
    run = run_module(
        "glamor_lightning.train",
        [f"data.root={synth_root}", *fast, "trainer.max_epochs=1", "model.hidden=16", "+trainer.limit_train_batches=1"],
        tmp_path / "run",
    )
    (line,) = [x for x in (run.stdout + run.stderr).splitlines() if "trainer.precision=auto ->" in x]
    assert "malloc keeping freed memory as the training will" in line


def test_a_config_keeps_freed_memory_unless_its_callback_is_off_or_gone(tmp_path):
    from glamor_lightning.callbacks.allocator import enabled_in

    assert enabled_in(compose_config("train", tmp_path / "a"))
    assert not enabled_in(compose_config("train", tmp_path / "b", ["callbacks.keep_freed_memory.enabled=false"]))
    assert not enabled_in(compose_config("train", tmp_path / "c", ["callbacks.keep_freed_memory=null"]))
