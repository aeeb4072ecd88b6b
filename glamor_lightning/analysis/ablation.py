"""Local ablation runner: a paper table's grid with Hydra multirun (no W&B), then a markdown table.

    python -m glamor_lightning.analysis.ablation run --table 4 [--seeds 0 1 2] [--data ROOT] [-- OVERRIDES]
        (an `experiment=a,b` override runs only those settings of the table)
    python -m glamor_lightning.analysis.ablation collect RUN_DIR [RUN_DIR ...] [--table 4] [--out FILE]

`run` launches `python -m glamor_lightning.train -m experiment=<the table's cells> seed=<seeds>
logger=csv hydra.sweep.dir=logs/ablation/table<N>/<time> [data.root=ROOT] OVERRIDES` (one run after
the other), then collects. `collect` reads every Hydra run folder under the given folders: the setting
from `.hydra/` (the `experiment` choice) and the resolved config the CSV logger saved
(`csv/hparams.yaml`), and the test accuracy of the best checkpoint from `csv/metrics.csv`. It writes
`results/table<N>.md` (setting, parameters, test accuracy as mean ± std over seeds) and
`results/table<N>_runs.csv` (one row per run), and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from glamor_lightning.analysis.ablation_runs import FACTORS, RECIPE, Run, display_path, find_runs
from glamor_lightning.hydra_utils import CONF_DIR

#: what each table studies (paper: Le et al. 2021) and its experiment configs (conf/experiment/)
TITLES = {
    "2": "Table 2: GLAMOR-Net vs CAER-Net-S on CAER-S",
    "3": "Table 3: GLAMOR-Net vs CAER-Net-S on NCAER-S",
    "4": "Table 4: input setting x context attention",
    "6": "Table 6: fusion of the face and context vectors",
    "7": "Table 7: backbone of both encoders",
    "collapse": "Remedies for a collapsing fusion gate (issue 17), beside face only and the plain fusion net",
}
FIXED = {
    "2": ["caer_net_s", "paper_caer_s"],
    "3": ["caer_net_s_ncaer_s", "paper_ncaer_s"],
    "collapse": ["table4_face", "table4_both_gla", "collapse_md30", "collapse_md30_aux50", "collapse_residual"],
}
INPUT_ORDER = ("face", "context", "context_visible", "both")
ATTENTION_ORDER = ("none", "standard", "gla")
FUSION_ORDER = ("none", "fusion_net", "add", "max", "concat")
BACKBONE_ORDER = ("original", "mobilenetv2", "resnet18")
LABELS = {
    "inputs": {
        "face": "face only",
        "context": "context only (face masked)",
        "context_visible": "context only (face visible)",
        "both": "face + context",
    },
    "attention": {"none": "none (average pool)", "standard": "standard (CAER-Net-S)", "gla": "GLA"},
    "fusion": {"none": "-", "fusion_net": "fusion net", "add": "add", "max": "max", "concat": "concat"},
    "backbone": {"original": "original", "mobilenetv2": "MobileNetV2", "resnet18": "ResNet-18"},
}
HEADERS = {"inputs": "Input", "attention": "Attention", "fusion": "Fusion", "backbone": "Backbone"}


def table_experiments(table: str) -> list[str]:
    """The experiment configs of a paper table, in the paper's row order."""
    table = str(table)
    if table in FIXED:
        return list(FIXED[table])
    names = [p.stem for p in (Path(CONF_DIR) / "experiment").glob(f"table{table}_*.yaml")]
    if not names:
        known = ", ".join(
            sorted(
                set(FIXED) | {p.stem.split("_")[0][5:] for p in (Path(CONF_DIR) / "experiment").glob("table*_*.yaml")}
            )
        )
        raise ValueError(f"no experiment configs for table {table!r} in conf/experiment; tables: {known}")
    return sorted(names, key=lambda n: _order(_factors_of(n)))


def _factors_of(experiment: str) -> dict[str, str]:
    cfg = yaml.safe_load((Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").read_text()) or {}
    return {k: str(v) for k, v in (cfg.get("model") or {}).items() if k in FACTORS}


def _rank(order: Sequence[str], value: str | None) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _order(f: dict[str, Any]) -> tuple:
    return (
        _rank(INPUT_ORDER, f.get("inputs")),
        _rank(ATTENTION_ORDER, f.get("attention")),
        _rank(FUSION_ORDER, f.get("fusion")),
        _rank(BACKBONE_ORDER, f.get("backbone")),
    )


# --- the table ------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std([100 * v for v in values])
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def _params(factors: dict[str, str], cache: dict) -> str:
    key = tuple(sorted(factors.items()))
    if key not in cache:
        try:
            from glamor_lightning.analysis.params import count_params

            cache[key] = f"{count_params(**factors):,}"
        except Exception:  # noqa: BLE001 - a count is a nicety, never a reason to lose the results
            cache[key] = "?"
    return cache[key]


def markdown_table(runs: Sequence[Run], params: bool = True) -> str:
    """One row per setting (experiment): varying factors, parameters, test and best val accuracy (%)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.experiment, []).append(r)
    settings = sorted(groups, key=lambda e: (_order(groups[e][0].factors), e))
    varying = [k for k in FACTORS if len({g[0].factors.get(k) for g in groups.values()}) > 1] or [
        k for k in FACTORS if k in (runs[0].factors if runs else {})
    ]
    fused = any(r.w_face is not None for r in runs)  # a fusion net was trained: show where it looked
    flips = any(r.context_flip is not None for r in runs)  # the collapse diagnostics were logged
    head = (
        [HEADERS[k] for k in varying]
        + (["Params"] if params else [])
        + ["Test acc (%)", "Val acc best (%)"]
        + (["Face weight"] if fused else [])
        + (["Context flip (%)"] if flips else [])
        + ["Seeds", "Config"]
    )
    align = (
        ["---"] * len(varying)
        + (["---:"] if params else [])
        + ["---:", "---:"]
        + (["---:"] if fused else [])
        + (["---:"] if flips else [])
        + ["---:", "---"]
    )
    means = {
        e: mean_std([r.test_acc for r in g if r.test_acc is not None])[0]
        for e, g in groups.items()
        if any(r.test_acc is not None for r in g)
    }
    best = max(means.values()) if means else None
    cache: dict = {}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for e in settings:
        g = groups[e]
        done = [r for r in g if r.test_acc is not None]
        test = _pct([r.test_acc for r in done])
        if best is not None and e in means and means[e] == best and len(means) > 1:
            test = f"**{test}**"
        seeds = str(len(done)) if len(done) == len(g) else f"{len(done)} of {len(g)} (rest failed)"
        cells = [LABELS[k].get(g[0].factors.get(k, "?"), g[0].factors.get(k, "?")) for k in varying]
        if params:
            cells.append(_params(g[0].factors, cache))
        cells += [test, _pct([r.val_acc_best for r in g if r.val_acc_best is not None])]
        if fused:
            weights = [r.w_face for r in g if r.w_face is not None]
            cells.append(f"{sum(weights) / len(weights):.2f}" if weights else "-")
        if flips:
            values = [r.context_flip for r in g if r.context_flip is not None]
            cells.append(_pct(values) if values else "-")
        cells += [seeds, f"`{e}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _synth_breakdown(runs: Sequence[Run]) -> str | None:
    from glamor_lightning.analysis.synth_breakdown import breakdown_table

    try:
        return breakdown_table(sorted(runs, key=lambda r: (_order(r.factors), r.experiment)))
    except ValueError as err:  # a breakdown is a nicety, never a reason to lose the results
        print(f"ablation: no SynthCAER breakdown: {err}", file=sys.stderr)
        return None


def _recipe_text(runs: Sequence[Run]) -> str:
    parts = []
    for k in RECIPE:
        vals = sorted({str(r.recipe.get(k)) for r in runs if r.recipe.get(k) is not None})
        if vals:
            parts.append(f"`{k}={vals[0]}`" if len(vals) == 1 else f"`{k}` in {{{', '.join(vals)}}}")
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    epochs = sorted({r.epochs for r in runs if r.epochs is not None})
    parts.append(f"seeds {', '.join(map(str, seeds))}")
    if epochs:
        parts.append(f"epochs run: {', '.join(map(str, epochs))}")
    return "; ".join(parts)


def results_page(runs: Sequence[Run], table: str | None, command: str | None = None, params: bool = True) -> str:
    """The results file: title, protocol, command, the table, and where the runs are."""
    title = TITLES.get(str(table), f"Table {table}") if table else "Ablation results"
    lines = [f"## {title}", ""]
    if command:
        lines += ["Made by:", "", "```", command, "```", ""]
    lines += [
        f"Protocol: {_recipe_text(runs)}.",
        "",
        "Test accuracy of each run's best checkpoint (by val/acc), mean ± sample std over seeds; "
        "**bold**: the best mean. Face weight: the fusion net's mean weight w_f of the face vector "
        "(w_c = 1 - w_f) at the last validation, averaged over seeds (1: the context is ignored).",
        "",
        markdown_table(runs, params=params),
        "",
    ]
    by_demand = _synth_breakdown(runs)
    if by_demand:
        lines += [
            "Test accuracy (%) by what the image demands, mean over seeds (SynthCAER only; "
            "`python -m glamor_lightning.analysis.synth_breakdown RUN_DIR`): *weak* = the target's face is "
            "near neutral, so only the context can tell; *distractors* = bystanders of other colours "
            "showing random emotions, told apart from the companion only by the target's colour.",
            "",
            by_demand,
            "",
        ]
    roots = sorted({display_path(r.path.parent) for r in runs})
    lines += [f"Runs: {', '.join(roots)} ({len(runs)} runs; {dt.date.today().isoformat()})", ""]
    return "\n".join(lines)


def write_results(
    runs: Sequence[Run], out: str | Path, table: str | None, command: str | None = None, params: bool = True
) -> str:
    """Write the markdown page to `out` and one row per run next to it (`<stem>_runs.csv`); return the page."""
    if not runs:
        raise ValueError("no runs found: nothing to tabulate")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = results_page(runs, table, command, params)
    out.write_text(page)
    with (out.parent / f"{out.stem}_runs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["experiment", "seed", *FACTORS, "test_acc", "val_acc_best", "epochs", "w_face", "context_flip", "path"]
        )
        for r in sorted(runs, key=lambda r: (r.experiment, r.seed if r.seed is not None else -1)):
            w.writerow(
                [
                    r.experiment,
                    r.seed,
                    *(r.factors.get(k, "") for k in FACTORS),
                    "" if r.test_acc is None else f"{r.test_acc:.6f}",
                    "" if r.val_acc_best is None else f"{r.val_acc_best:.6f}",
                    r.epochs,
                    "" if r.w_face is None else f"{r.w_face:.4f}",
                    "" if r.context_flip is None else f"{r.context_flip:.4f}",
                    display_path(r.path),
                ]
            )
    return page


# --- running a table ------------------------------------------------------------------------------------


def multirun_command(
    experiments: Sequence[str],
    seeds: Sequence[int | str],
    sweep_dir: str | Path,
    data: str | None = None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """The Hydra multirun command line for the grid (one run per experiment × seed, CSV logs only)."""
    cmd = [
        sys.executable,
        "-m",
        "glamor_lightning.train",
        "-m",
        f"experiment={','.join(experiments)}",
        f"seed={','.join(map(str, seeds))}",
        "logger=csv",
        f"hydra.sweep.dir={Path(sweep_dir).resolve()}",
    ]
    if data:
        cmd.append(f"data.root={Path(data).resolve()}")
    return cmd + list(overrides)


def run_table(
    table: str,
    seeds: Sequence[int],
    data: str | None,
    overrides: Sequence[str],
    out: str | None,
    sweep_dir: str | None,
    dry_run: bool = False,
) -> int:
    experiments = table_experiments(table)
    chosen = [o for o in overrides if o.startswith("experiment=")]
    if chosen:  # a subset (or another order) of the table's settings, e.g. to resume a partial table
        experiments = chosen[-1].split("=", 1)[1].split(",")
        overrides = [o for o in overrides if not o.startswith("experiment=")]
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = Path(sweep_dir or Path("logs") / "ablation" / f"table{table}" / stamp)
    cmd = multirun_command(experiments, seeds, sweep_dir, data, overrides)
    shown = shlex.join(["python", *cmd[1:]])
    print(
        f"{len(experiments)} settings x {len(seeds)} seed(s) = {len(experiments) * len(seeds)} runs\n$ {shown}",
        flush=True,
    )
    if dry_run:
        return 0
    status = subprocess.run(cmd).returncode
    if status != 0:
        print(f"the multirun exited with {status}: tabulating the runs that finished", file=sys.stderr)
    runs = find_runs([sweep_dir]) if sweep_dir.is_dir() else []
    if not runs:
        print(f"no runs under {sweep_dir}", file=sys.stderr)
        return status or 1
    out = out or f"results/table{table}.md"
    if chosen:
        overrides = [*overrides, f"experiment={','.join(experiments)}"]
    made_by = shlex.join(
        [
            "python",
            "-m",
            "glamor_lightning.analysis.ablation",
            "run",
            "--table",
            str(table),
            "--seeds",
            *map(str, seeds),
            *(["--data", str(data)] if data else []),
            *(["--", *overrides] if overrides else []),
        ]
    )
    print(write_results(runs, out, table, command=made_by))
    print(f"written: {out}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m glamor_lightning.analysis.ablation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run a table's grid with Hydra multirun, then tabulate (overrides after --)")
    r.add_argument("--table", required=True, help="paper table: 2, 3, 4, 6 or 7")
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--data", default=None, help="data root (default: the experiment's / data/synthcaer)")
    r.add_argument("--out", default=None, help="results file (default: results/table<N>.md)")
    r.add_argument("--sweep-dir", default=None, help="Hydra sweep folder (default: logs/ablation/table<N>/<time>)")
    r.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    c = sub.add_parser("collect", help="tabulate finished runs")
    c.add_argument("dirs", nargs="+", help="Hydra sweep or run folders")
    c.add_argument("--table", default=None, help="paper table (for the title)")
    c.add_argument("--out", default=None, help="results file (default: results/table<N>.md or results/ablation.md)")
    c.add_argument("--command", default=None, help="the command that made the runs, for the page")
    c.add_argument("--no-params", action="store_true", help="no parameter-count column")
    args = parser.parse_args(argv)
    try:
        if args.action == "run":
            return run_table(args.table, args.seeds, args.data, extra, args.out, args.sweep_dir, args.dry_run)
        runs = find_runs(args.dirs)
        out = args.out or (f"results/table{args.table}.md" if args.table else "results/ablation.md")
        print(write_results(runs, out, args.table, args.command, params=not args.no_params))
        print(f"written: {out}")
        return 0
    except (ValueError, FileNotFoundError) as err:
        print(f"ablation: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
