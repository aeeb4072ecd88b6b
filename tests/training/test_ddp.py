"""2-process CPU DDP (gloo): fit with a stage switch and a gate-floor decision, test, and the single-process test of
the same checkpoint gives exactly the same accuracy, counting every test sample once."""

from __future__ import annotations

import re

import pytest

from conftest import SMALL_SYNTH, compose_config
from glamor_lightning.eval import evaluate
from training_helpers import FAST, epoch_rows, read_metrics, run_module

N_TEST = 7 * SMALL_SYNTH.per_class_test


@pytest.fixture(scope="module")
def ddp_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = run_module(
        "glamor_lightning.train",
        [
            f"data.root={synth_root}",
            *FAST,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            # branches in epoch 0, fusion (encoders frozen) in epoch 1: freezing must not upset DDP
            "callbacks=staged",
            "callbacks.stages.stages.1.start=1",
            "callbacks.stages.stages.2.start=2",
            # the gate floor decided from both processes' counts (alpha so small that it is released after epoch 0)
            "callbacks.gate_floor.enabled=true",
            "callbacks.gate_floor.hold_fraction=0.5",
            "callbacks.gate_floor.alpha=1e-30",
        ],
        out,
        threads=1,
    )
    best = re.search(r"Best checkpoint: (\S+)", proc.stdout).group(1)
    rows = read_metrics(out)
    test = next(r for r in rows if "test/acc" in r)
    return out, best, test, rows


def test_ddp_test_accuracy_equals_single_process_exactly(ddp_run, synth_root, tmp_path):
    out, best, test, _ = ddp_run
    single = evaluate(
        compose_config(
            "eval",
            tmp_path,
            [
                f"data.root={synth_root}",
                "trainer.accelerator=cpu",
                "trainer.precision=32-true",
                f"ckpt_path={best}",
                "data.cache_workers=0",
                "logger=csv",
            ],
        )
    )
    assert test["test/n"] == single["test/n"] == N_TEST  # every test sample once, none padded in
    assert test["test/acc"] == single["test/acc"]
    for name in ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"):
        assert test[f"test/acc_{name}"] == single[f"test/acc_{name}"]
    assert test["test/loss"] == pytest.approx(single["test/loss"], rel=1e-6)  # sums in another order


def test_ddp_runs_the_stages_and_keeps_frozen_parts_still(ddp_run):
    _, _, _, rows = ddp_run
    epochs = epoch_rows(rows)
    assert [epochs[e]["stage"] for e in (0, 1)] == [0.0, 1.0]
    # epoch 1 (fusion) trains only the fusion net and classifier: the branches' heads predict alike
    assert epochs[1]["val/acc_face"] == epochs[0]["val/acc_face"]
    assert epochs[1]["val/acc_context"] == epochs[0]["val/acc_context"]
    assert epochs[1]["val/w_face"] != epochs[0]["val/w_face"]


def test_ddp_decides_the_gate_floor_from_both_processes_counts(ddp_run):
    _, _, _, rows = ddp_run
    epochs = epoch_rows(rows)
    assert [epochs[e]["train/gate_floor"] for e in (0, 1)] == pytest.approx([0.4, 0.0])
    assert all(0.0 <= epochs[e]["train/acc_context_head"] <= 1.0 for e in (0, 1))
