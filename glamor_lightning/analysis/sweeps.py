"""W&B sweep files (`sweeps/*.yaml`): an offline checker, and `create`, which registers a sweep.

    python -m glamor_lightning.analysis.sweeps check sweeps/*.yaml
    python -m glamor_lightning.analysis.sweeps create sweeps/table4.yaml [--project P] [--entity E]

`check` needs no network: the method and goal are valid, the metric is one of `SWEEP_METRICS`, the
command runs the Hydra entry point as a module with `${args_no_hyphens}`, and every grid
point (the parameters as Hydra overrides, formatted as the W&B agent formats them) composes into a
train config whose model and data module instantiate. `create` checks first, then runs
`wandb sweep` (only when W&B credentials exist, and with a time limit) and prints the agent command.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
#: the command every sweep runs: the Hydra entry point as a module, parameters as `key=value`
ENTRY_MODULE = "glamor_lightning.train"
ARGS_MACRO = "${args_no_hyphens}"
#: macros the W&B agent expands in `command` (wandb/wandb_agent.py, sdk/launch/sweeps/utils.py)
MACROS = {
    "${env}",
    "${interpreter}",
    "${program}",
    "${args}",
    "${args_no_hyphens}",
    "${args_no_equals}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
}
#: how long `wandb sweep` may take to answer before `create` gives up (it must never hang)
CREATE_TIMEOUT_S = 60
#: the metrics a sweep may optimise: the validation metrics, which every training run logs once per epoch
#: under these exact names (tests/e2e/test_train_eval.py checks them against a real run's logged columns).
#: Test metrics are left out on purpose: settings are chosen on the validation split.
SWEEP_METRICS = ("val/acc_best", "val/acc", "val/loss")


# --- grid points ------------------------------------------------------------------------------------


def _param_values(name: str, spec: Any, method: str, errors: list[str]) -> list[Any] | None:
    """The values a parameter takes in the check (all for value/values; the ends of a range)."""
    if not isinstance(spec, dict):
        errors.append(f"parameter '{name}': expected a mapping with 'value' or 'values', got {spec!r}")
        return None
    if "parameters" in spec:
        errors.append(f"parameter '{name}': nested parameters do not map to Hydra overrides; use dotted keys")
        return None
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            errors.append(f"parameter '{name}': 'values' must be a non-empty list, got {values!r}")
            return None
        return values
    if "min" in spec and "max" in spec:
        if method == "grid":
            errors.append(f"parameter '{name}': method 'grid' needs 'value' or 'values', not a min/max range")
            return None
        return [spec["min"], spec["max"]]
    errors.append(f"parameter '{name}': needs 'value', 'values' or 'min'/'max'; got keys {sorted(spec)}")
    return None


def format_overrides(point: dict[str, Any]) -> list[str]:
    """`key=value` arguments exactly as the W&B agent's `${args_no_hyphens}` writes them."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

        return create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args_no_hyphens"]
    except ImportError:  # the agent's formatting, should that internal module move
        return [f"{k}={v}" for k, v in point.items()]


def grid_points(parameters: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """The cartesian product of the parameters' values, in file order."""
    names = list(parameters)
    for combo in itertools.product(*(parameters[n] for n in names)):
        yield dict(zip(names, combo))


# --- composing through Hydra --------------------------------------------------------------------------


def compose_train_config(overrides: list[str], root: Path | None = None):
    """The train config with `overrides`, composed as `python -m glamor_lightning.train` would compose it
    (Hydra's runtime set, so `${hydra:...}` paths resolve)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from glamor_lightning.hydra_utils import CONF_DIR

    root = Path(root or os.getcwd())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            cfg = compose(config_name="train", return_hydra_config=True, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.runtime.output_dir = str(root / "outputs")
    HydraConfig().set_config(cfg)
    return cfg


def _instantiate_checks(cfg, cache: dict[str, str | None]) -> str | None:
    """Instantiate the model and the data module; return an error message or None."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    key = OmegaConf.to_yaml(cfg.model)
    if key not in cache:
        try:
            instantiate(cfg.model)
            cache[key] = None
        except Exception as err:  # noqa: BLE001 - reported, not raised
            cache[key] = f"model does not instantiate: {_root_cause(err)}"
    if cache[key]:
        return cache[key]
    try:
        instantiate(cfg.data)
    except Exception as err:  # noqa: BLE001
        return f"data module does not instantiate: {_root_cause(err)}"
    return None


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# --- the checker ----------------------------------------------------------------------------------------


def check_sweep(path: str | os.PathLike[str], instantiate: bool = True) -> list[str]:
    """Every problem of the sweep file at `path` (empty: fine); `instantiate=False` composes each grid
    point without building its model and data module."""
    path = Path(path)
    errors: list[str] = []
    try:
        sweep = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        return [f"cannot read the sweep file: {err}"]
    if not isinstance(sweep, dict):
        return [f"a sweep file is a mapping, got {type(sweep).__name__}"]

    method = sweep.get("method")
    if method not in METHODS:
        errors.append(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    metric = sweep.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        errors.append("metric must be a mapping with 'name' and 'goal' (e.g. {name: val/acc_best, goal: maximize})")
    else:
        if metric.get("goal") not in GOALS:
            errors.append(f"metric goal must be one of {', '.join(GOALS)}; got {metric.get('goal')!r}")
        if metric["name"] not in SWEEP_METRICS:
            errors.append(
                f"metric {metric['name']!r} is not one a sweep may optimise; use one of {', '.join(SWEEP_METRICS)}"
            )

    command = sweep.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        errors.append(
            f"command must be a list of strings, e.g. [${{env}}, ${{interpreter}}, -m, {ENTRY_MODULE}, {ARGS_MACRO}]"
        )
    else:
        if ENTRY_MODULE not in command or "-m" not in command or command.index("-m") + 1 != command.index(ENTRY_MODULE):
            errors.append(f"command must run the Hydra entry point as a module: '-m {ENTRY_MODULE}'")
        if ARGS_MACRO not in command:
            errors.append(f"command must pass the parameters as Hydra overrides with {ARGS_MACRO}")
        unknown = [c for c in command if c.startswith("${") and c not in MACROS]
        if unknown:
            errors.append(f"command has unknown W&B macros {unknown}; known: {', '.join(sorted(MACROS))}")

    parameters = sweep.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        errors.append("parameters must be a non-empty mapping of Hydra keys to {value: ...} or {values: [...]}")
        return errors
    values: dict[str, list[Any]] = {}
    for name, spec in parameters.items():
        vals = _param_values(str(name), spec, str(method), errors)
        if vals is not None:
            values[str(name)] = vals
    if len(values) != len(parameters):
        return errors

    cache: dict[str, str | None] = {}
    for point in grid_points(values):
        overrides = format_overrides(point)
        try:
            cfg = compose_train_config(overrides)
        except Exception as err:  # noqa: BLE001 - Hydra's composition errors, reported per point
            errors.append(f"grid point {' '.join(overrides)}: does not compose: {_root_cause(err)}")
            continue
        if instantiate:
            problem = _instantiate_checks(cfg, cache)
            if problem:
                errors.append(f"grid point {' '.join(overrides)}: {problem}")
    return errors


def grid_size(path: str | os.PathLike[str]) -> int:
    """The number of runs a grid sweep file makes."""
    sweep = yaml.safe_load(Path(path).read_text())
    n = 1
    for spec in sweep["parameters"].values():
        n *= len(spec["values"]) if "values" in spec else 1
    return n


# --- create ---------------------------------------------------------------------------------------------

LOGIN_HELP = """W&B sweeps live on the W&B server, and {why}.
Log in once with `wandb login` (or export WANDB_API_KEY=...), unset WANDB_MODE, then run again.
Check the file offline: python -m glamor_lightning.analysis.sweeps check {path}
Without W&B, run the same grid locally with Hydra multirun: make ablation TABLE=<n> (docs/experiments.md)."""


def create(path: str, project: str | None = None, entity: str | None = None, timeout: float = CREATE_TIMEOUT_S) -> int:
    """Register the sweep with `wandb sweep` and print the agent command. Fails at once, saying how to
    log in, when W&B is offline or nobody is logged in; checks the file before registering it."""
    from glamor_lightning.loggers import wandb_credentials_found

    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    why = None
    if mode in ("offline", "disabled", "dryrun"):
        why = f"WANDB_MODE={mode} keeps W&B off the network"
    elif not wandb_credentials_found():
        why = "no W&B login was found (no WANDB_API_KEY, no entry in ~/.netrc)"
    if why:
        print(LOGIN_HELP.format(why=why, path=path), file=sys.stderr)
        return 3
    errors = check_sweep(path)
    if errors:
        print(f"{path}: {len(errors)} problem(s):\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    method = yaml.safe_load(Path(path).read_text()).get("method")
    print(f"{path}: OK" + (f" ({grid_size(path)} runs in the grid)" if method == "grid" else ""))
    wandb_bin = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    cmd = (
        [wandb_bin, "sweep"]
        + (["--project", project] if project else [])
        + (["--entity", entity] if entity else [])
        + [str(path)]
    )
    print("$ " + " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(
            f"`wandb sweep` got no answer from the W&B server within {timeout:.0f} s: check the network "
            "(or WANDB_BASE_URL) and your login (`wandb login`).",
            file=sys.stderr,
        )
        return 4
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # no terminal colours
    sys.stderr.write(output)
    found = re.search(r"wandb agent (\S+)", output)
    if proc.returncode != 0 or not found:
        print(f"`wandb sweep` failed (exit {proc.returncode}); see its output above.", file=sys.stderr)
        return proc.returncode or 5
    print(
        "\nSweep created. Start agents (one per GPU; repeat on other machines) with the project's venv "
        f"active, from the repository root:\n  wandb agent {found.group(1)}\n"
        f"e.g. CUDA_VISIBLE_DEVICES=0 wandb agent {found.group(1)} &"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.sweeps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    c = sub.add_parser("check", help="check sweep files offline")
    c.add_argument("files", nargs="+")
    c.add_argument("--no-instantiate", action="store_true", help="compose only, do not build models")
    k = sub.add_parser("create", help="check, then create the sweep on W&B and print the agent command")
    k.add_argument("file")
    k.add_argument("--project", default=None, help="W&B project (default: the file's `project`)")
    k.add_argument("--entity", default=None)
    args = parser.parse_args(argv)
    if args.action == "create":
        return create(args.file, args.project, args.entity)
    status = 0
    for f in args.files:
        errors = check_sweep(f, instantiate=not args.no_instantiate)
        if errors:
            status = 1
            print(f"{f}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
        else:
            print(f"{f}: OK")
    return status


if __name__ == "__main__":
    sys.exit(main())
