"""argparse `type=` checks shared by the `glamor` sub-commands.

A value that fails one is reported by argparse as one line, `glamor predict: error: argument --threshold:
must be in (0, 1], got 1.5`, with exit status 2, before anything is loaded or written.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def probability(text: str) -> float:
    """A number in (0, 1] (a confidence threshold)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (a share)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number above 0 (frames per second, seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def int_at_least(low: int, why: str = ""):
    """An argparse `type` for whole numbers ≥ `low` (`why` is added to the message of a smaller one)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, at least {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{why}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"  # argparse names the type in some messages
    return parse


#: a whole number ≥ 1 (a count or a size in pixels)
positive_int = int_at_least(1)


def output_folder(text: str) -> str:
    """A folder to write into: new, or an existing folder, but not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is an existing file, not a folder: give a folder to write into")
    return text


def output_file(text: str) -> str:
    """A file to write: new, or an existing file (replaced), but not a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path} is a folder, not a file: give the file to write, e.g. {path / 'model.onnx'}"
        )
    return text
