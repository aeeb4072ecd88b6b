"""Where glamor-lightning keeps what it measures or builds on a machine: `$GLAMOR_CACHE_DIR`, by default
`~/.cache/glamor_lightning` (precision choices, `precision_choice.py`; built CPU kernels, `models/fused_bn.py`).
Deleting it costs a new measurement or build, nothing else."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("GLAMOR_CACHE_DIR") or Path.home() / ".cache" / "glamor_lightning")
