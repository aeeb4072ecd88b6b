"""The Makefile, run for real as `make -n` (a dry run: nothing installs, trains or lints)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ["ARGS", "BACKBONE", "BENCH_ARGS", "CKPT", "DATA", "OUT", "PYTHON", "SEEDS", "SWEEP", "TABLE", "VENV"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(*args: str, env: dict[str, str] | None = None, dry: bool = True) -> subprocess.CompletedProcess[str]:
    """`make -n ARGS...` in the repository root; MAKEFLAGS/MAKELEVEL of an outer make are dropped."""
    base = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(
        ["make", *(["-n"] if dry else []), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def test_a_known_variable_reaches_the_command() -> None:
    run = make("train", "BACKBONE=resnet18", "DATA=/data/x", "ARGS=logger=csv trainer.max_epochs=1")
    assert run.returncode == 0, run.stderr
    assert re.search(
        r"glamor_lightning\.train model\.backbone=resnet18 data\.root=/data/x "
        r"logger=csv trainer\.max_epochs=1$",
        run.stdout,
        re.M,
    ), run.stdout


def test_a_variable_in_the_wrong_case_is_refused_naming_the_right_one() -> None:
    run = make("train", "backbone=resnet18")
    assert run.returncode != 0 and "glamor_lightning.train" not in run.stdout
    assert (
        "unknown command-line variable backbone=resnet18 (did you mean BACKBONE=resnet18?); known: " + " ".join(KNOWN)
        in run.stderr
    )


def test_an_unquoted_hydra_override_is_refused_saying_to_quote_args() -> None:
    run = make("train", "ARGS=logger=csv", "trainer.max_epochs=1")
    assert run.returncode != 0 and "glamor_lightning.train" not in run.stdout
    assert (
        "unknown command-line variable trainer.max_epochs=1; "
        'quote Hydra overrides: ARGS="logger=csv trainer.max_epochs=1"' in run.stderr
    )


def test_every_unknown_variable_is_named() -> None:
    run = make("test", "foo=1", "Table=4")
    assert run.returncode != 0 and "pytest" not in run.stdout
    assert "Table=4 (did you mean TABLE=4?) foo=1;" in run.stderr and 'ARGS="foo=1"' in run.stderr


def test_environment_variables_and_make_options_are_not_refused() -> None:
    run = make(
        "-j2", "--no-print-directory", "train", "BACKBONE=original", "MAKEFLAGS=-k", env={"backbone": "x", "foo": "1"}
    )
    assert run.returncode == 0, run.stderr
    assert "model.backbone=original" in run.stdout


def test_every_target_in_help_is_phony() -> None:
    listed = set(re.findall(r"^\s+(?:\x1b\[\d+m)?([a-z][a-z-]*)", make("help", dry=False).stdout, re.M))
    database = make("-pq", "help").stdout  # make's database, .PHONY included
    phony = set(re.search(r"^\.PHONY: (.*)$", database, re.M).group(1).split())
    assert {"bench", "lint", "format", "train", "sweep"} <= listed
    assert listed <= phony, sorted(listed - phony)


def test_lint_checks_without_changing_files_and_format_changes_them() -> None:
    lint = make("lint").stdout
    assert re.search(r"ruff check \.$", lint, re.M) and re.search(r"ruff format --check \.$", lint, re.M)
    fmt = make("format").stdout
    assert re.search(r"ruff check --fix \.$", fmt, re.M) and re.search(r"ruff format \.$", fmt, re.M)


def test_ci_lints_before_it_tests() -> None:
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps == ["make lint", "make test"]
