"""The checkpoint-path check that runs before the slow imports (torch, Lightning: 8-10 s; the data root's is
`data.index.check_data_root`), and the one-line report of a user error by the Hydra entry points.

A missing data root or checkpoint is a user's mistake, not a program's: it is reported as one line
(`glamor train: error: ...`, exit status 2) without Hydra's traceback, and as early as possible.
`GLAMOR_TRACEBACK=1` shows the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from glamor_lightning.checkpoint_files import folder_error
from glamor_lightning.errors import CheckpointError, SetupError, UserError

T = TypeVar("T")


def check_checkpoint_path(path: str | os.PathLike | None, what: str = "ckpt_path") -> Path:
    """A checkpoint argument must name an existing file (what it holds is `checkpoints.read_checkpoint`'s job)."""
    if not path:
        raise UserError(f"Pass the checkpoint: {what}=/path/to/model.ckpt (make eval CKPT=...)")
    path = Path(path)
    if path.is_dir():
        raise folder_error(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist ({what})")
    return path


def _user_error(err: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`err`, or the first of its causes (Hydra wraps what a target raises), that is a user error."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, kinds):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def report_user_errors(program: str, fn: Callable[[], T], kinds: tuple[type[BaseException], ...] = ()) -> T:
    """Run `fn`; a user error (`FileNotFoundError`, `ValueError` — our checks' errors —, `CheckpointError`,
    `SetupError`, or one of `kinds`), also when Hydra wrapped it, becomes one line on stderr and exit status 2.
    GLAMOR_TRACEBACK=1 shows the traceback instead."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a user error
        found = _user_error(err, (FileNotFoundError, ValueError, CheckpointError, SetupError, *kinds))
        if found is None or os.environ.get("GLAMOR_TRACEBACK"):
            raise
        print(f"{program}: error: {found}", file=sys.stderr)
        raise SystemExit(2) from None
