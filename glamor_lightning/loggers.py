"""Loggers: W&B that goes offline by itself when nobody is logged in, so a run never hangs or fails."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_credentials_found() -> bool:
    """True when W&B has an API key without asking anyone: WANDB_API_KEY or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode() -> str:
    """WANDB_MODE when the user set it, else online with credentials and offline without."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    return "online" if wandb_credentials_found() else "offline"


def wandb_logger(
    project: str = "glamor-lightning", save_dir: str = ".", mode: str | None = None, **kwargs
) -> WandbLogger:
    """A WandbLogger whose online/offline mode is decided before W&B starts."""
    mode = mode or wandb_mode()
    os.environ["WANDB_MODE"] = mode  # DDP children and wandb's own service read it
    if mode == "offline":
        log.info("W&B offline (no login found): sync later with `wandb sync %s/wandb/offline-run-*`", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=mode == "offline",
        mode=mode if mode != "offline" else None,
        **kwargs,
    )
