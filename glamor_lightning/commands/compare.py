"""`glamor compare A.csv B.csv [C.csv ...]`: accuracy of each model and significance tests per pair.

The files are `predictions.csv` written by `eval` (see docs/results.md). They must cover the same
samples with the same true labels. Per pair: Stuart–Maxwell (marginal homogeneity of the predicted
classes) and McNemar (correct/incorrect), as the paper's Table 5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _compare(args: argparse.Namespace) -> int:
    from glamor_lightning.analysis.compare import compare, format_report
    from glamor_lightning.analysis.predictions import read_predictions

    runs = [read_predictions(p) for p in args.files]
    results = compare(runs, mcnemar_variant=args.mcnemar)
    print(format_report(runs, results))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "accuracy": {r.source: r.accuracy for r in runs},
                    "samples": len(runs[0]),
                    "pairs": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
        print(f"\nwrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="significance tests between prediction files (Stuart-Maxwell, McNemar)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="PREDICTIONS.csv", help="two or more predictions.csv files")
    p.add_argument(
        "--mcnemar",
        choices=("auto", "exact", "chi2"),
        default="auto",
        help="McNemar variant: exact binomial, chi-square with continuity correction, or auto "
        "(exact when the discordant pairs are fewer than 25; default)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=_compare)
