"""`train/loss` reaches Lightning only on the steps its loggers write (module `_writes_step_metrics`): what the CSV
holds must be what logging at every step would have written, step for step, and the epoch means must not change."""

from __future__ import annotations

from conftest import compose_config
from training_helpers import FAST, fit, read_metrics

#: 2 epochs of 7 steps
RUN = [*FAST, "trainer.max_epochs=2", "callbacks.branch_diagnostics.enabled=false"]


def _losses(root, out, every: int) -> tuple[dict[int, float], dict[int, float]]:
    fit(compose_config("train", out, [f"data.root={root}", *RUN, f"trainer.log_every_n_steps={every}"]))
    rows = read_metrics(out)
    steps = {int(r["step"]): r["train/loss_step"] for r in rows if "train/loss_step" in r}
    epochs = {int(r["epoch"]): r["train/loss_epoch"] for r in rows if "train/loss_epoch" in r}
    return steps, epochs


def test_step_losses_logged_every_n_steps_are_those_of_logging_every_step(synth_root, tmp_path) -> None:
    every_step, every_step_epochs = _losses(synth_root, tmp_path / "one", 1)
    sparse, sparse_epochs = _losses(synth_root, tmp_path / "three", 3)
    assert sorted(every_step) == list(range(14))
    # Lightning writes the steps whose 1-based optimiser step is a multiple of 3 (its `step` column is 0-based)
    assert sorted(sparse) == [2, 5, 8, 11]
    assert len(set(every_step.values())) == 14  # the losses differ from step to step: a stale value would show
    assert {s: every_step[s] for s in sparse} == sparse
    assert sparse_epochs == every_step_epochs and len(sparse_epochs) == 2
