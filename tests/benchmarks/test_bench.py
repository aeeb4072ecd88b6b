"""The benchmark suite (`make bench`): timing helpers, the JSON it writes, and quick real runs."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glamor_lightning.analysis.sweeps import compose_train_config
from glamor_lightning.data.synth import SynthConfig, load_config

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `benchmarks/` is a folder of the repository, not of the package
    sys.path.insert(0, str(REPO))

from benchmarks import common, run  # noqa: E402
from benchmarks.common import Settings, Timing  # noqa: E402
from conftest import linux_glibc  # noqa: E402


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0 and x == x


def test_measure_takes_the_median_after_warmup():
    s = Settings.make(torch.device("cpu"), quick=True, repeats=5, min_repeats=5, warmup=2)
    calls = []
    t = common.measure(lambda: calls.append(1), 10, s)
    assert len(t.samples) == 5 and t.per_repeat >= 1
    assert len(calls) == 2 + 5 * t.per_repeat
    assert t.median == sorted(t.samples)[2] and _positive(t.median)


def test_a_slow_first_call_does_not_size_the_repeats():
    """On a GPU the first step of a new shape can take seconds (cuDNN autotuning); sized from it, a
    repeat would run one step (seen on an H200: 5×1 steps). The second warm-up call sizes them."""
    s = Settings.make(
        torch.device("cpu"), quick=True, repeats=3, min_repeats=3, warmup=2, repeat_s=0.2, slow_call_s=0.1
    )
    calls = []

    def step():
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.005)

    t = common.measure(step, 1, s)
    assert t.per_repeat >= 10  # 0.2 s / 5 ms = 40 in theory; 1 if sized from the 0.3 s call
    assert len(calls) == 2 + 3 * t.per_repeat


def test_interleaved_repeats_alternate():
    s = Settings.make(torch.device("cpu"), quick=True, repeats=3, min_repeats=3, warmup=1, repeat_s=0.0)
    order: list[str] = []
    out = common.measure_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 1, s)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up each, then A B A B A B
    assert set(out) == {"a", "b"} and all(len(t.samples) == 3 for t in out.values())


def _fake_raw(backbones=("original",)) -> dict:
    t = lambda v: Timing(samples=[v, v * 1.1, v * 0.9], per_repeat=1)  # noqa: E731
    raw = {
        "flops": {
            "peak": {"matmul_n": 512, "fp32_gflops": 100.0, "bf16_gflops": 200.0},
            "costs": {
                b: {"params": 10, "forward_gflops_per_image": 0.5, "train_gflops_per_image": 1.5} for b in backbones
            },
        },
        "model": {
            "grid": {
                b: {
                    "fp32/nchw": t(10),
                    "fp32/channels_last": t(11),
                    "bf16-mixed/nchw": t(15),
                    "bf16-mixed/channels_last": t(20),
                }
                for b in backbones
            },
            "best": {
                b: {"precision": "bf16-mixed", "channels_last": True, "key": "bf16-mixed/channels_last"}
                for b in backbones
            },
        },
        "full": {b: {"model_only": t(20), "full": t(19), "full_device_aug": t(19.5)} for b in backbones},
        "data": {
            "images": 64,
            "timings": {
                w: {"decode": t(100), "cache": t(1500), "cache_batched": t(2000), "cache_albumentations": t(500)}
                for w in ("0", "2")
            },
        },
        "detect": {
            "image_size": [320, 180],
            "batch": 8,
            "batch1_ips": t(10),
            "batched_ips": t(20),
            "faces_found_per_image": [1] * 8,
            "predict_backbone": backbones[0],
            "faces_found": {"1": 1, "4": 4, "8": 8},
            "latency": {k: t(5) for k in ("1", "4", "8")},
            "detect": {k: t(6) for k in ("1", "4", "8")},
            "classify": {b: {k: t(50) for k in ("1", "4", "8")} for b in backbones},
            "bounds": {
                "480": {"detect": {k: t(50) for k in ("1", "4", "8")}, "max_edge_px": 7.5, "same_faces": True},
                "640": {"detect": {k: t(25) for k in ("1", "4", "8")}, "max_edge_px": 3.0, "same_faces": True},
            },
            "fold": {k: {"folded": t(50), "unfolded": t(40)} for k in ("1", "4", "8")},
        },
    }
    return raw


def test_summary_schema_table_and_files(tmp_path):
    s = Settings.make(torch.device("cpu"), backbones=("original", "resnet18"))
    doc = run.summarise(_fake_raw(s.backbones), s, common.machine(s.device), list(run.SECTIONS), 12.0)
    for key in ("cpu", "cores", "torch", "device", "cuda"):
        assert key in doc["machine"]
    for b in ("original", "resnet18"):
        e = doc["backbones"][b]
        assert e["model_only_ips"] == 20 and e["full_ips"] == 19 and e["full_ratio"] == pytest.approx(0.95)
        assert e["best"] == {"precision": "bf16-mixed", "channels_last": True}
        assert e["achieved_gflops"] == pytest.approx(30.0) and e["utilisation_pct"] == pytest.approx(15.0)
        assert len(e["model_only_grid_ips"]) == 4
    assert doc["data_path"]["decode_ips"] == 100 and doc["data_path"]["cache_over_decode"] == pytest.approx(15)
    assert doc["detection"]["latency_ms"]["8"] == pytest.approx(200.0)
    assert doc["detection"]["bounds"]["480"] == {
        "detect_ms": {"1": 20.0, "4": 20.0, "8": 20.0},
        "max_edge_px": 7.5,
        "same_faces": True,
    }
    assert doc["detection"]["fold_ms"]["1"] == {"folded": 20.0, "unfolded": 25.0}
    text = run.table(doc)
    assert "| 480 | 20 | 20 | 20 | 7.5 | yes |" in text and "| 1 | 20.0 | 25.0 | 1.25× |" in text
    for heading in ("Model-only training", "Full training", "Data path", "Face detection", "Matmul peak"):
        assert heading in text
    paths = run.write(doc, text, tmp_path)
    assert json.loads((tmp_path / "latest.json").read_text())["backbones"]["resnet18"]["full_ips"] == 19
    dated = tmp_path / f"{doc['date']}-{common.kind_slug(doc['machine'])}.json"
    assert paths[1] == dated and dated.is_file() and paths[-1].read_text().startswith("# glamor")
    # a second run the same day on the same kind keeps the first one's file
    again = run.write({**doc, "elapsed_s": 1.0}, text, tmp_path)[1]
    assert again == tmp_path / f"{dated.stem}-2.json" and json.loads(dated.read_text())["elapsed_s"] != 1.0


@pytest.mark.parametrize(
    "machine, slug",
    [
        ({"cpu": "AMD EPYC", "amx": False, "native_bf16": True, "cuda": None}, "amd-epyc"),
        ({"cpu": "Intel(R) Xeon(R) Processor", "amx": True, "native_bf16": True, "cuda": None}, "intel-xeon-amx"),
        ({"cpu": "Intel(R) Xeon(R) Processor", "amx": False, "native_bf16": False}, "intel-xeon-no-native-bf16"),
        ({"cpu": "AMD EPYC 9654 96-Core Processor", "amx": None, "native_bf16": None}, "amd-epyc-9654"),
        ({"cpu": "Intel(R) Xeon(R) Platinum 8480+", "amx": True, "cuda": {"name": "NVIDIA H200"}}, "nvidia-h200"),
        ({"cpu": "", "cuda": None}, "unknown"),
    ],
)
def test_result_files_are_named_by_machine_kind(machine, slug):
    """Two kinds measured the same day get two files (the AMX run of 2026-12-07 would have written over the AMD one's
    dated copy, and the authors' comparison's file of the AMD run the same day: both named by the date alone)."""
    assert common.kind_slug(machine) == slug


def _check_required(doc: dict, backbones=("original",)) -> None:
    """What issue 7 asks the JSON to hold."""
    assert doc["machine"]["cpu"] and doc["machine"]["cores"] >= 1 and doc["machine"]["torch"]
    for b in backbones:
        e = doc["backbones"][b]
        assert _positive(e["model_only_ips"]) and _positive(e["full_ips"]) and _positive(e["full_device_aug_ips"])
        assert all(_positive(v) for v in e["model_only_grid_ips"].values()) and len(e["model_only_grid_ips"]) == 4
    d = doc["data_path"]
    assert _positive(d["decode_ips"]) and _positive(d["cache_ips"]) and set(d["workers"]) == {"0", "2"}


def test_quick_run_in_process(tmp_path, synth_root):
    """Model-only, full training and data path for real, tiny (the data: the session's SynthCAER)."""
    root = tmp_path / "synthcaer"  # a copy: the benchmark writes its cache into the root
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    out = tmp_path / "results"
    assert run.main(["--quick", "--only", "data,full,lightning", "--data", str(root), "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())
    assert doc["quick"] is True and doc["settings"]["sections"] == ["model", "data", "full", "lightning"]
    _check_required(doc)
    loop = doc["lightning"]["original"]["4"]  # Trainer.fit against the bare loop, at the authors' batch
    assert all(_positive(x) for x in loop["fit"] + loop["bare"]) and len(loop["bare"]) == len(loop["fit"]) + 1
    assert loop["fit_over_bare"] == pytest.approx(loop["fit"][0] / statistics.mean(loop["bare"]))
    assert "Lightning's loop against a bare loop" in (out / "latest.md").read_text()


def test_main_job_section_times_the_entry_points_training(tmp_path, synth_root):
    """`--only main_job`: the default config trained by `train()` itself, its epochs timed and projected."""
    root = tmp_path / "synthcaer"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".cache"))
    out = tmp_path / "results"
    args = ["--quick", "--only", "main_job", "--backbones", "original", "--data", str(root), "--out", str(out)]
    assert run.main(args) == 0
    job = json.loads((out / "latest.json").read_text())["main_job"]["original"]
    assert len(job["epoch_s"]) == 1 and _positive(job["setup_s"]) and _positive(job["epoch_s"][0])
    default = compose_train_config([], tmp_path)
    assert job["max_epochs"] == default.trainer.max_epochs and job["recipe"] == default.recipe.name
    assert job["precision"] in ("32-true", "bf16-mixed")
    assert job["projected_s"] == pytest.approx(job["setup_s"] + job["max_epochs"] * job["epoch_s"][0])
    # the data it trained on is stated: `--data` is not what `make train` reads, and the table says so
    assert job["train_images"] == 7 * 8 and job["as_make_train"] is False
    text = (out / "latest.md").read_text()
    assert "## The main job" in text and "Data: 56 training images, **not** the SynthCAER `make train` reads" in text


def test_main_job_is_timed_on_the_data_make_train_reads(tmp_path, synth_root):
    """The main job's projection is only the job's when it trains on `make train`'s data: data/synthcaer, or, on a
    machine without it, the same SynthCAER made with `glamor prepare synth`'s defaults (it was timed on the other
    sections' 700-image root there, 4-5x too short, and said nothing)."""
    absent, fallback = tmp_path / "absent" / "synthcaer", tmp_path / "small"
    assert common.main_job_root(str(synth_root), False, fallback, default=absent) == (synth_root, None, False)
    assert common.main_job_root(str(synth_root), False, fallback, default=synth_root) == (synth_root, None, True)
    assert common.main_job_root(None, False, fallback, default=synth_root) == (synth_root, None, True)
    assert common.main_job_root(None, True, fallback, default=absent) == (fallback, None, False)
    root, tmp, as_make_train = common.main_job_root(None, False, fallback, default=absent)
    try:
        assert as_make_train and tmp is not None and root.is_relative_to(tmp) and not absent.exists()
        # `glamor prepare synth`'s defaults: the images `make synth` makes
        assert (root / "synthcaer.json").is_file() and load_config(root) == SynthConfig()
        train = [line for line in (root / "faces.csv").read_text().splitlines() if line.startswith("train,")]
        assert len(train) == 7 * SynthConfig().per_class_train
    finally:
        shutil.rmtree(tmp)


@pytest.mark.slow
def test_make_bench_quick_subprocess(tmp_path):
    """The whole quick suite as `make bench` runs it (every section, its own temp SynthCAER)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Model-only training" in proc.stdout and "Face detection" in proc.stdout
    assert "Training beside a CPU load" in proc.stdout
    doc = json.loads((tmp_path / "latest.json").read_text())
    policies = doc["contention"]["policies"]
    assert set(policies) == {"spin (OpenMP's default)", "passive", "spin 10,000", "spin 1,000", "sized threads"}
    loaded = [q for p in policies.values() for q in p["placements"].values()]
    assert all(set(p["placements"]) == {"another program", "same session"} for p in policies.values())
    ends = [(q["threads_loaded_end"], p["threads"]) for p in policies.values() for q in p["placements"].values()]
    assert all(1 <= end <= threads for end, threads in ends)
    assert all(_positive(p["alone_ips"]) for p in policies.values()) and all(_positive(q["loaded_ips"]) for q in loaded)
    assert "another program: img/s" in proc.stdout
    _check_required(doc)
    assert doc["backbones"]["original"]["params"] == 2_158_602
    assert _positive(doc["backbones"]["original"]["forward_gflops_per_image"])
    assert _positive(doc["peak"]["fp32_gflops"]) and _positive(doc["peak"]["bf16_gflops"])
    det = doc["detection"]
    assert _positive(det["batch1_ips"]) and _positive(det["batched_ips"])
    assert det["faces_found"] == {"1": 1, "5": 5, "8": 8}  # MTCNN finds every tiled face
    assert all(_positive(v) for v in det["latency_ms"].values())
    assert set(det["bounds"]) == {"480", "512", "640"}
    assert all(b["same_faces"] and 0 <= b["max_edge_px"] <= 12 for b in det["bounds"].values())
    assert all(_positive(c["folded"]) and _positive(c["unfolded"]) for c in det["fold_ms"].values())


def test_fair_share_of_the_cores():
    from benchmarks.contention import fair_slowdown

    assert fair_slowdown(threads=2, busy=2, cores=2) == pytest.approx(2.0)  # the case
    assert fair_slowdown(threads=1, busy=2, cores=2) == pytest.approx(1.5)  # 1 thread gets 2/3 of a core
    assert fair_slowdown(threads=2, busy=0, cores=2) == pytest.approx(1.0)
    assert fair_slowdown(threads=4, busy=4, cores=8) == pytest.approx(1.0)  # room for everyone
    # shared between sessions first (autogroup): the training's session is owed half the cores
    assert fair_slowdown(threads=2, busy=2, cores=2, per_session=True) == pytest.approx(2.0)
    assert fair_slowdown(threads=1, busy=2, cores=2, per_session=True) == pytest.approx(1.0)  # one thread: one core
    assert fair_slowdown(threads=2, busy=1, cores=2, per_session=True) == pytest.approx(2.0)
    assert fair_slowdown(threads=8, busy=1, cores=8, per_session=True) == pytest.approx(8 / 7)  # it leaves 7 cores


def _session_members(sid: int) -> list[str]:
    """The states (R running, S sleeping, ...) of the live (not zombie) processes of session `sid`."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we read
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
            out.append(fields[0])
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_busy_loops_as_another_program_run_in_their_own_session_and_end_with_the_block():
    """The contention section's "another program": all its loops in one new session (what the kernel's autogroup
    shares the cores by), each busy, and none left running afterwards; "same session" loops share ours."""
    from benchmarks.contention import busy_loops

    with busy_loops(2, "another program") as sid:
        assert sid != os.getsid(0)
        assert _session_members(sid) == ["R", "R"]  # the leader loops too
    assert _session_members(sid) == []
    with busy_loops(2, "same session") as sid:
        assert sid == os.getsid(0)
    unknown = "unknown placement 'elsewhere'; known: another program, same session"
    with pytest.raises(ValueError, match=unknown), busy_loops(1, "elsewhere"):
        pass


def test_rewrites_section_times_each_model_against_its_rewrite_undone(tmp_path):
    """`--only rewrites`: the original model as it trains against each rewrite undone (the paper's layer order, torch's
    pooling backward, torch's layers instead of the fused kernel)."""
    out = tmp_path / "results"
    assert run.main(["--quick", "--only", "rewrites", "--backbones", "original", "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())
    assert list(doc["rewrites"]["original"]) == [
        "max-pool before ReLU",
        "max-pool backward by unpooling",
        "BN, max-pool and ReLU as one kernel",
    ]
    for entry in doc["rewrites"]["original"].values():
        assert set(entry) == {"32-true", "bf16-mixed"}
        for fig in (entry["32-true"], entry["bf16-mixed"]):
            assert _positive(fig["as_trained"]) and _positive(fig["undone"])
            assert fig["speedup"] == pytest.approx(fig["as_trained"] / fig["undone"])
    table = (out / "latest.md").read_text()
    assert "| original | max-pool before ReLU | bf16-mixed |" in table
    assert "| original | max-pool backward by unpooling | bf16-mixed |" in table
    assert "| original | BN, max-pool and ReLU as one kernel | bf16-mixed |" in table


@linux_glibc
def test_allocator_section_times_fresh_processes_with_and_without_kept_memory(tmp_path):
    """`--only allocator`: the same steps in fresh processes with malloc's defaults and keeping freed memory; the
    benchmark process itself keeps freed memory, as training does."""
    out = tmp_path / "results"
    assert run.main(["--quick", "--only", "allocator", "--backbones", "original", "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())
    assert doc["machine"]["keeps_freed_memory"] is True
    by_precision = doc["allocator"]["backbones"]["original"]
    assert set(by_precision) == {"32-true", "bf16-mixed"}
    for fig in by_precision.values():
        default, kept = fig["malloc's defaults"], fig["keep freed memory"]
        assert _positive(default["ips"]) and _positive(kept["ips"]) and _positive(kept["peak_rss_mb"])
        assert fig["speedup"] == pytest.approx(kept["ips"] / default["ips"])
        assert kept["faults_per_step"] < default["faults_per_step"]
    table = (out / "latest.md").read_text()
    assert "## Keeping freed memory" in table and "| original | bf16-mixed |" in table


def test_compile_section_times_the_compiled_step_against_eager_cold_and_with_a_warm_cache(tmp_path):
    """`--only compile`: the model compiled as `model.compile` does it, against eager, and the first call's seconds
    cold and with the first process's cache warm. Quick runs compile with `aot_eager` and fp32 only."""
    out = tmp_path / "results"
    assert run.main(["--quick", "--only", "compile", "--out", str(out)]) == 0
    doc = json.loads((out / "latest.json").read_text())["compile"]
    assert (doc["backbone"], doc["backend"], list(doc["precisions"])) == ("original", "aot_eager", ["32-true"])
    fig = doc["precisions"]["32-true"]
    assert all(_positive(fig[k]) for k in ("eager", "compiled", "first_call_s", "first_call_warm_cache_s"))
    assert fig["speedup"] == pytest.approx(fig["compiled"] / fig["eager"], rel=1e-3)  # one round: its own ratio
    table = (out / "latest.md").read_text()
    assert "## `torch.compile` (aot_eager) of the training step against eager" in table and "| 32-true |" in table


def test_lightnings_cost_is_each_fit_against_the_bare_runs_on_either_side_so_a_steady_drift_cancels():
    from benchmarks.lightning_loop import sandwiched_ratio

    # the machine slows steadily by 10 img/s per run; Lightning costs exactly 5 %
    bares = [100.0, 80.0, 60.0, 40.0]
    fits = [0.95 * 90.0, 0.95 * 70.0, 0.95 * 50.0]  # each fit runs between two bare runs
    assert sandwiched_ratio(fits, bares) == pytest.approx(0.95)
    assert statistics.median(f / b for f, b in zip(fits, bares[1:])) > 1.05  # against the next run alone: a gain
    with pytest.raises(ValueError, match="a bare run before and after it: 3 fits, 3 bare runs"):
        sandwiched_ratio(fits, bares[:3])
