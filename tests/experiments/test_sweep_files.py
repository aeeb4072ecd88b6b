"""Every `sweeps/*.yaml` is checked offline; the checker fails on broken files (fixtures below)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from glamor_lightning.analysis import sweeps as sw

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml"))
# that a training run logs every name in sw.SWEEP_METRICS is asserted by tests/e2e/test_train_eval.py


MINIMAL = {
    "program": "glamor_lightning/train.py",
    "method": "grid",
    "metric": {"name": "val/acc_best", "goal": "maximize"},
    "parameters": {"experiment": {"values": ["table4_face", "table4_both_gla"]}, "seed": {"values": [0, 1]}},
    "command": ["${env}", "${interpreter}", "-m", "glamor_lightning.train", "${args_no_hyphens}"],
}


def write(tmp_path: Path, sweep) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep if isinstance(sweep, str) else yaml.safe_dump(sweep))
    return path


def test_there_is_a_sweep_per_paper_table():
    assert {p.stem for p in SWEEPS} >= {"table2", "table3", "table4", "table6", "table7"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_valid_offline(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid" and sweep["metric"] == {"name": "val/acc_best", "goal": "maximize"}
    assert sw.check_sweep(path) == []


def test_table4_sweep_runs_exactly_the_valid_cells():
    sweep = yaml.safe_load((Path(sw.__file__).resolve().parents[2] / "sweeps" / "table4.yaml").read_text())
    cells = sweep["parameters"]["experiment"]["values"]
    assert len(cells) == len(set(cells)) == 10 and "table4_face" in cells
    assert sw.grid_size(SWEEPS[[p.stem for p in SWEEPS].index("table4")]) == 30


@pytest.mark.parametrize("metric", sw.SWEEP_METRICS)
def test_minimal_sweep_passes_with_each_sweep_metric(tmp_path, metric):
    sweep = _broken(metric={"name": metric, "goal": "minimize" if metric.endswith("loss") else "maximize"})
    assert sw.check_sweep(write(tmp_path, sweep), instantiate=False) == []


def test_minimal_sweep_passes(tmp_path):
    assert sw.check_sweep(write(tmp_path, MINIMAL)) == []


def _broken(**changes):
    sweep = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            del sweep[key]
        else:
            sweep[key] = value
    return sweep


BROKEN = {
    "unknown method": (_broken(method="gridsearch"), "method must be one of"),
    "metric the module never logs": (
        _broken(metric={"name": "val/accuracy", "goal": "maximize"}),
        "metric 'val/accuracy' is not one a sweep may optimise; use one of val/acc_best, val/acc, val/loss",
    ),
    # logged with on_step and on_epoch: loggers get train/loss_step and train/loss_epoch, never train/loss
    "metric logged under another name": (
        _broken(metric={"name": "train/loss", "goal": "minimize"}),
        "'train/loss' is not one a sweep may optimise",
    ),
    "bad goal": (_broken(metric={"name": "val/acc_best", "goal": "max"}), "goal must be one of"),
    "no metric": (_broken(metric=None), "metric must be a mapping"),
    "script instead of module": (
        _broken(command=["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]),
        "as a module",
    ),
    "argparse-style args": (
        _broken(command=["${env}", "${interpreter}", "-m", "glamor_lightning.train", "${args}"]),
        "${args_no_hyphens}",
    ),
    "unknown macro": (
        _broken(command=["${env}", "${python}", "-m", "glamor_lightning.train", "${args_no_hyphens}"]),
        "unknown W&B macros",
    ),
    "unknown experiment": (
        _broken(parameters={"experiment": {"values": ["table4_face", "table4_face_gla"]}}),
        "experiment=table4_face_gla: does not compose",
    ),
    "unknown key": (_broken(parameters={"model.attentoin": {"values": ["gla"]}}), "does not compose"),
    "grid point that does not instantiate": (
        _broken(parameters={"experiment": {"value": "table4_face"}, "model.attention": {"values": ["none", "gla"]}}),
        "experiment=table4_face model.attention=gla: model does not instantiate: ValueError",
    ),
    "unknown backbone": (
        _broken(parameters={"model.backbone": {"values": ["no_such_net"]}}),
        "Unknown backbone 'no_such_net'",
    ),
    "range in a grid": (_broken(parameters={"model.lr": {"min": 0.001, "max": 0.1}}), "needs 'value' or 'values'"),
    "empty values": (_broken(parameters={"seed": {"values": []}}), "non-empty list"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_sweep_file_is_reported(case, tmp_path):
    sweep, expected = BROKEN[case]
    errors = sw.check_sweep(write(tmp_path, sweep))
    assert errors, f"{case}: no error reported"
    assert any(expected in e for e in errors), errors


def test_unreadable_sweep_file_is_reported(tmp_path):
    assert "cannot read" in sw.check_sweep(write(tmp_path, "method: grid\n  bad: [indent"))[0]
    assert "mapping" in sw.check_sweep(write(tmp_path, "- a\n- b\n"))[0]


def test_check_command_exits_non_zero_on_a_broken_file(tmp_path, capsys):
    path = write(tmp_path, _broken(method="gridsearch", parameters={"seed": {"value": 0}}))
    assert sw.main(["check", str(path)]) == 1
    assert "method must be one of" in capsys.readouterr().out


def test_create_says_how_to_log_in_when_offline(tmp_path, monkeypatch, capsys):
    sweep = _broken(parameters={"experiment": {"value": "table4_face"}})
    monkeypatch.setenv("WANDB_MODE", "offline")
    started = time.perf_counter()
    assert sw.create(str(write(tmp_path, sweep))) == 3
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err
    assert "wandb login" in err and "WANDB_MODE=offline" in err and "make ablation" in err


def test_create_without_credentials_never_calls_wandb(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(sw.subprocess, "run", lambda *a, **k: pytest.fail("wandb sweep must not run"))
    assert sw.create(str(write(tmp_path, _broken(parameters={"seed": {"value": 0}})))) == 3
    assert "no W&B login was found" in capsys.readouterr().err


def test_create_registers_the_sweep_and_prints_the_agent_command(tmp_path, monkeypatch, capsys):
    import subprocess

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return subprocess.CompletedProcess(
            cmd,
            0,
            "",
            "wandb: Creating sweep with ID: abc123\n"
            "wandb: Run sweep agent with: \x1b[1mwandb agent me/glamor/abc123\x1b[0m\n",
        )

    monkeypatch.setattr(sw.subprocess, "run", fake_run)
    path = write(tmp_path, _broken(parameters={"experiment": {"value": "table4_face"}}))
    assert sw.create(str(path), project="glamor") == 0
    ((cmd, kwargs),) = calls
    assert cmd[1:] == ["sweep", "--project", "glamor", str(path)] and kwargs["timeout"] == sw.CREATE_TIMEOUT_S
    assert "  wandb agent me/glamor/abc123\n" in capsys.readouterr().out


def test_create_gives_up_when_the_server_does_not_answer(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)

    def hang(cmd, timeout, **kwargs):
        raise sw.subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(sw.subprocess, "run", hang)
    assert sw.create(str(write(tmp_path, _broken(parameters={"seed": {"value": 0}})))) == 4
    assert "no answer from the W&B server" in capsys.readouterr().err


def test_create_refuses_a_broken_file_before_calling_wandb(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(sw.subprocess, "run", lambda *a, **k: pytest.fail("wandb sweep must not run"))
    assert sw.create(str(write(tmp_path, _broken(method="gridsearch", parameters={"seed": {"value": 0}})))) == 1
    assert "method must be one of" in capsys.readouterr().err
