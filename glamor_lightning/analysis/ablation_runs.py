"""Reading finished training runs: one `Run` per Hydra run folder (setting, seed, recipe, test accuracy).

A run's setting is its `experiment` choice (`.hydra/`) plus any model factor or training recipe its command
line overrides (`experiment=table4_both_none model.fusion=add` and `experiment=table4_both_gla recipe=context`
are settings of their own), its recipe the resolved config
the CSV logger saved (`csv/hparams.yaml`), its figures `csv/metrics.csv`. `ablation` tabulates what this
reads.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: the model components a paper table varies
FACTORS = ("inputs", "attention", "fusion", "backbone")
#: command-line keys that make a setting of their own: the factors, and the recipe group (conf/recipe/)
FACTOR_KEYS = {f"model.{k}" for k in FACTORS} | {"recipe"}
#: the recipe items the results page states (dotted keys of the resolved train config)
RECIPE = (
    "recipe.name",
    "data.root",
    "trainer.max_epochs",
    "trainer.precision",
    "data.batch_size",
    "model.lr",
    "model.lr_schedule",
    "model.bn_momentum",
    "model.gla_batchnorm",
    "model.pretrained",
    "callbacks.stages",
)


@dataclass
class Run:
    """One finished (or failed) training run, read from its Hydra output folder."""

    path: Path
    experiment: str  #: the setting: the experiment name, then any model factor or recipe overridden on the command line
    seed: int | None
    factors: dict[str, str]
    recipe: dict[str, Any] = field(default_factory=dict)
    test_acc: float | None = None
    val_acc_best: float | None = None
    epochs: int | None = None  #: epochs validated
    w_face: float | None = None  #: the fusion net's mean weight of the face vector, last validation
    #: share of val predictions that change when the context vector is zeroed, last validation
    #: (`callbacks.branch_diagnostics`; None for runs made before it, or with one branch)
    context_flip: float | None = None


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads a python-tagged node (as Lightning may write in hparams.yaml) as None."""


_Loader.add_multi_constructor("", lambda loader, suffix, node: None)


def _load_yaml(path: Path) -> Any:
    return (yaml.load(path.read_text(), Loader=_Loader) or {}) if path.is_file() else {}


def _read_metrics(path: Path) -> tuple[float | None, float | None, int | None, float | None, float | None]:
    """(last test/acc, best val/acc_best, epochs validated, last val/w_face, last val/context_flip) from a
    CSVLogger metrics.csv."""
    if not path.is_file():
        return None, None, None, None, None
    test = val = epoch = w_face = flip = None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("test/acc"):
                test = float(row["test/acc"])
            if row.get("val/acc_best"):
                val = max(val or 0.0, float(row["val/acc_best"]))
            if row.get("val/w_face"):
                w_face = float(row["val/w_face"])
            if row.get("val/context_flip"):
                flip = float(row["val/context_flip"])
            if row.get("epoch") and row.get("val/acc"):  # test rows carry the epoch after the last
                epoch = max(epoch or 0, int(float(row["epoch"])) + 1)
    return test, val, epoch, w_face, flip


def read_run(run_dir: str | Path) -> Run:
    """A `Run` from a Hydra run folder (with `.hydra/`); metrics are None when the run did not finish."""
    run_dir = Path(run_dir)
    hydra_cfg = _load_yaml(run_dir / ".hydra" / "hydra.yaml")
    cfg = _load_yaml(run_dir / "csv" / "hparams.yaml").get("config") or _load_yaml(run_dir / ".hydra" / "config.yaml")
    overrides = [str(o) for o in _load_yaml(run_dir / ".hydra" / "overrides.yaml") or []]
    experiment = _get(hydra_cfg, "hydra.runtime.choices.experiment")
    if not experiment:
        experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "")
    factor_overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in FACTOR_KEYS]
    model = cfg.get("model") or {}
    test, val, epochs, w_face, flip = _read_metrics(run_dir / "csv" / "metrics.csv")
    return Run(
        path=run_dir,
        experiment=" ".join([str(experiment or "-"), *factor_overrides]),
        seed=cfg.get("seed"),
        factors={k: str(model.get(k)) for k in FACTORS if k in model},
        recipe={k: _recipe_value(cfg, k) for k in RECIPE},
        test_acc=test,
        val_acc_best=val,
        epochs=epochs,
        w_face=w_face,
        context_flip=flip,
    )


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies inside it: results pages name no machine."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _recipe_value(cfg: dict, key: str) -> Any:
    if key == "callbacks.stages":  # the staged-training callback: its stage names, or end to end
        stages = _get(cfg, "callbacks.stages.stages")
        if not (isinstance(cfg.get("callbacks"), dict) and "stages" in cfg["callbacks"]):
            return None  # a config from before staged training existed: say nothing
        if not stages or _get(cfg, "callbacks.stages.enabled") is False:
            return "off (end to end)"
        return " -> ".join(f"{s.get('name')}@{s.get('start')}" for s in stages if isinstance(s, dict))
    if key == "data.root" and _get(cfg, key):
        return display_path(Path(_get(cfg, key)))
    return _get(cfg, key)


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every Hydra run folder (one holding `.hydra/config.yaml`) under `dirs`, sorted by path."""
    found = set()
    for d in dirs:
        d = Path(d)
        if (d / ".hydra" / "config.yaml").is_file():
            found.add(d.resolve())
        found.update(p.parent.parent.resolve() for p in d.rglob("config.yaml") if p.parent.name == ".hydra")
    runs = [read_run(p) for p in sorted(found)]
    return [r for r in runs if r.factors]  # training runs only (an eval run's config has no model)
