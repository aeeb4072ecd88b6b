"""`glamor params`: trainable parameters per backbone × attention × fusion (markdown or csv)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from glamor_lightning.analysis.params import run

    return run(args)


def register(sub: argparse._SubParsersAction) -> None:
    from glamor_lightning.analysis.params import add_arguments

    p = sub.add_parser("params", help="parameter counts per backbone x attention x fusion (markdown table)")
    add_arguments(p)
    p.set_defaults(func=_run)
