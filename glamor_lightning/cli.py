"""The `glamor` command; its sub-commands live in `glamor_lightning.commands` (one module each)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from glamor_lightning import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glamor", description="GLAMOR-Net: data, prediction, reports")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"glamor: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
