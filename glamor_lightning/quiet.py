"""Third-party notes a user of this project cannot act on, silenced in one place.

`quiet_third_party_notes()` is called by the entry points (train, eval) before they build a Trainer. Each
entry names one note precisely (by the start of its message, and its category), so every other warning
still shows:

- Lightning's model summary cannot size bf16/16-bit weights and says so at every fit: the size it prints
  is an estimate in fp32, nothing is wrong;
- torch deprecated `isinstance(x, LeafSpec)`, which Lightning 2.6's own pytree helper still uses (a
  FutureWarning per fit and per test, fixed by a later Lightning, not by us);
- Lightning logs tips advertising its cloud products (`litlogger`, `litmodels`) at every Trainer.
"""

from __future__ import annotations

import logging
import re
import warnings

#: (start of the message as a regex, category) of Python warnings from libraries we cannot change
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"Precision \S+ is not supported by the model summary", UserWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
#: log lines (start of the message as a regex) of Lightning's rank-zero loggers
LOG_LINES: tuple[str, ...] = (r"💡 Tip: ",)
#: the loggers Lightning's `rank_zero_info` writes to
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class DropLines(logging.Filter):
    """Drops the log records whose message starts with one of `LOG_LINES`."""

    patterns = tuple(re.compile(p) for p in LOG_LINES)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def quiet_third_party_notes() -> None:
    """Silence the notes listed in this module (idempotent; the process's other warnings are untouched)."""
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines())
