"""The Hydra entry points report a user's mistake as one line (exit 2), before the slow imports where they can;
a resumed run reads its checkpoint weights-only; every job of a multirun gets its own W&B run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import compose_config
from glamor_lightning.train import train

REPO = Path(__file__).resolve().parents[2]
FAST = [
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "data.cache_workers=0",
    "data.batch_size=8",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "test=false",
]


class Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def run_entry_point(module: str, *overrides: str, out: Path) -> tuple[int, str, bool]:
    """Run `module.main()` in a fresh interpreter; (exit code, stderr, whether Lightning was imported)."""
    code = (
        f"import sys\nsys.argv = ['{module}', *{list(overrides)!r}, 'hydra.run.dir={out}']\n"
        f"from {module} import main\n"
        "try:\n    main()\n    code = 0\nexcept SystemExit as e:\n    code = e.code\n"
        "print('LIGHTNING_IMPORTED', 'lightning' in sys.modules)\nsys.exit(code)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", GLAMOR_TRACEBACK="")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr, "LIGHTNING_IMPORTED True" in proc.stdout


def test_a_missing_data_root_is_one_line_before_lightning_is_imported(tmp_path):
    rc, err, imported = run_entry_point(
        "glamor_lightning.train", f"data.root={tmp_path / 'nowhere'}", out=tmp_path / "run"
    )
    assert rc == 2 and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"glamor train: error: Data root '{tmp_path / 'nowhere'}' does not exist. Make the embedded SynthCAER data"
        )
    )
    assert not imported


def test_a_model_the_default_recipe_is_not_for_is_one_line_before_lightning_is_imported(synth_root, tmp_path):
    face_only = ["model.inputs=face", "model.attention=none", "model.fusion=none"]
    rc, err, imported = run_entry_point(
        "glamor_lightning.train", f"data.root={synth_root}", *face_only, out=tmp_path / "run"
    )
    assert rc == 2 and "Traceback" not in err and not imported
    assert err.strip().splitlines()[-1] == (
        "glamor train: error: recipe=context trains a model with model.inputs=both, model.fusion=fusion_net; "
        "this one has model.inputs=face, model.fusion=none: add recipe=plain (no remedies), or set the model back"
    )


def test_a_missing_checkpoint_is_one_line_before_lightning_is_imported(tmp_path):
    rc, err, imported = run_entry_point(
        "glamor_lightning.eval", f"ckpt_path={tmp_path / 'no.ckpt'}", out=tmp_path / "run"
    )
    assert rc == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1] == f"glamor eval: error: Checkpoint {tmp_path / 'no.ckpt'} does not exist "
        "(ckpt_path)"
    )
    assert not imported


def test_resuming_from_a_malicious_checkpoint_is_refused_and_runs_nothing(synth_root, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "loops": Payload(marker)}, evil)
    rc, err, _ = run_entry_point(
        "glamor_lightning.train", f"data.root={synth_root}", f"ckpt_path={evil}", out=tmp_path / "run"
    )
    assert rc == 2 and "Traceback" not in err
    assert f"glamor train: error: Refused to load {evil}: it holds a Python object" in err
    assert not marker.exists()


def test_each_job_of_a_multirun_gets_its_own_wandb_run(synth_root, tmp_path):
    """Jobs of an in-process multirun share one interpreter: each must finish its W&B run."""
    for job in (0, 1):
        out = tmp_path / str(job)
        train(compose_config("train", out, [f"data.root={synth_root}", "logger=wandb", f"seed={job}", *FAST]))
    runs = [list((tmp_path / str(job) / "wandb").glob("offline-run-*")) for job in (0, 1)]
    assert [len(r) for r in runs] == [1, 1]  # before: job 1 logged into job 0's run (Lightning reuses wandb.run)
    assert runs[0][0].name.rsplit("-", 1)[-1] != runs[1][0].name.rsplit("-", 1)[-1]
