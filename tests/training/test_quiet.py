"""A training run's output has no third-party notes a user cannot act on (`glamor_lightning.quiet`), and
the other warnings still show."""

from __future__ import annotations

import logging
import warnings

from conftest import compose_config
from glamor_lightning.train import train
from training_helpers import FAST

SILENCED = (
    "Precision bf16-mixed is not supported by the model summary",
    "`isinstance(treespec, LeafSpec)` is deprecated",
)
#: FAST, with the model summary on and bf16-mixed, as a default run has them
RUN = [o for o in FAST if not o.startswith(("callbacks.model_summary", "trainer.precision"))] + [
    "trainer.precision=bf16-mixed",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "test=false",
]


class Lines(logging.Handler):
    """Keeps the messages of the log records it sees."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _tiny_fit(synth_root, out) -> tuple[list[str], list[str]]:
    """Warnings and Lightning's log lines of a one-step run of the training entry point."""
    handler, loggers = Lines(), [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    for logger in loggers:  # Lightning's loggers do not propagate to the root logger
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")  # each warning every time, whatever ran before in this process
            train(compose_config("train", out, [f"data.root={synth_root}", *RUN]))
            warnings.warn("a warning of our own", UserWarning, stacklevel=1)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert any(line.startswith("GPU available") for line in handler.lines)  # the lines are captured
    return [str(w.message) for w in seen], handler.lines


def test_third_party_notes_are_silenced(synth_root, tmp_path):
    seen, lines = _tiny_fit(synth_root, tmp_path)
    assert not [w for w in seen if w.startswith(SILENCED)], seen
    assert not [line for line in lines if line.startswith("💡 Tip")], lines
    assert "a warning of our own" in seen  # the filters are precise: other warnings still show
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_no_model_summary_clash(synth_root, tmp_path):
    _, lines = _tiny_fit(synth_root, tmp_path)
    assert not [line for line in lines if "already configured with model summary callbacks" in line]
