"""Makes malloc keep freed memory when a training starts, so its steps do not fault their pages in again.

See `glamor_lightning.allocator` for why and what it costs. It acts on the whole process, once (malloc's settings are
not restored: what it allocated under them stays in its heap), and only with glibc; `enabled: false` leaves malloc as
it is. `applied` says what happened in the last fit.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from glamor_lightning.allocator import keep_freed_memory


def enabled_in(cfg) -> bool:
    """Whether a training config keeps freed memory: it has `callbacks.keep_freed_memory`, enabled. What runs
    before its fit and times training steps (`trainer.precision=auto`) keeps it too, to time them as they will run."""
    spec = (cfg.get("callbacks") or {}).get("keep_freed_memory")
    return bool(spec) and bool(spec.get("enabled", True))


class KeepFreedMemory(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        #: whether malloc was told to keep freed memory in the last fit (False: disabled, or not glibc)
        self.applied = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.applied = self.enabled and keep_freed_memory()
