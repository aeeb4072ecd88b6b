"""Significance tests between models tested on the same samples (the paper's Table 5).

For every pair of prediction files:

- **Stuart–Maxwell** test of marginal homogeneity on the k×k cross-table of the two models' predicted
  classes (statsmodels `SquareTable(table).homogeneity()`): do the two models predict the classes in
  the same proportions? Classes that neither model predicts differently from the other (no
  off-diagonal count in their row or column) carry no information and make the covariance matrix
  singular; they are left out, so df = (classes kept) − 1.
- **McNemar** test on the 2×2 table of correct / incorrect (statsmodels `mcnemar`): do the two models
  make errors at different rates? `auto` (default) uses the exact binomial test when the discordant
  pairs b + c < 25, else the chi-square statistic with continuity correction (Edwards); `exact` and
  `chi2` force one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from glamor_lightning.analysis.predictions import Predictions
from glamor_lightning.data.classes import CLASSES

MCNEMAR_VARIANTS = ("auto", "exact", "chi2")
EXACT_BELOW = 25  # discordant pairs under which `auto` uses the exact binomial McNemar test


class SampleMismatchError(ValueError):
    """Prediction files that do not cover the same samples with the same true labels."""


@dataclass
class PairResult:
    a: str
    b: str
    n: int
    stuart_maxwell_statistic: float
    stuart_maxwell_df: int
    stuart_maxwell_p: float
    mcnemar_b: int  #: A correct, B wrong
    mcnemar_c: int  #: A wrong, B correct
    mcnemar_statistic: float
    mcnemar_p: float
    mcnemar_variant: str

    def as_dict(self) -> dict:
        return asdict(self)


def _listed(items: Sequence[str], limit: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")


def check_same_samples(runs: Sequence[Predictions]) -> None:
    """Raise `SampleMismatchError` unless every file has the same paths with the same true labels."""
    ref = runs[0]
    ref_true = dict(zip(ref.paths, ref.true))
    for other in runs[1:]:
        other_true = dict(zip(other.paths, other.true))
        only_ref = sorted(set(ref_true) - set(other_true))
        only_other = sorted(set(other_true) - set(ref_true))
        if only_ref or only_other:
            parts = [f"{ref.source} has {len(ref)} samples, {other.source} has {len(other)}"]
            if only_ref:
                parts.append(f"{len(only_ref)} only in {ref.source}: {_listed(only_ref)}")
            if only_other:
                parts.append(f"{len(only_other)} only in {other.source}: {_listed(only_other)}")
            raise SampleMismatchError("the prediction files do not cover the same samples: " + "; ".join(parts))
        differ = sorted(p for p in ref_true if ref_true[p] != other_true[p])
        if differ:
            detail = _listed([f"{p} ({ref_true[p]} vs {other_true[p]})" for p in differ])
            raise SampleMismatchError(
                f"{len(differ)} samples have different true labels in {ref.source} and {other.source}: {detail}"
            )


def class_order(runs: Sequence[Predictions]) -> list[str]:
    """Every class that occurs as a label or prediction: canonical ones first, in canonical order."""
    seen = {c for r in runs for c in (*r.true, *r.predicted)}
    return [c for c in CLASSES if c in seen] + sorted(seen - set(CLASSES))


def cross_table(a: Predictions, b: Predictions, classes: Sequence[str]) -> np.ndarray:
    """Counts [k, k]: row = A's predicted class, column = B's, over the same samples (matched by path)."""
    index = {c: i for i, c in enumerate(classes)}
    b_pred = dict(zip(b.paths, b.predicted))
    table = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for path, pa in zip(a.paths, a.predicted):
        table[index[pa], index[b_pred[path]]] += 1
    return table


def stuart_maxwell(table: np.ndarray) -> tuple[float, int, float]:
    """(statistic, df, p) of the Stuart–Maxwell test on a square table (uninformative classes dropped)."""
    from statsmodels.stats.contingency_tables import SquareTable

    table = np.asarray(table, dtype=np.float64)
    off = table - np.diag(np.diag(table))
    keep = (off.sum(0) + off.sum(1)) > 0
    reduced = table[np.ix_(keep, keep)]
    if reduced.shape[0] < 2:  # the two models never disagree on a class: no evidence of difference
        return 0.0, max(int(keep.sum()) - 1, 0), 1.0
    from scipy.stats import chi2

    # shift_zeros=False: statsmodels would otherwise replace every empty cell by 0.5
    res = SquareTable(reduced, shift_zeros=False).homogeneity(method="stuart_maxwell")
    # p from the survival function: statsmodels' 1 - cdf rounds small p-values to 0
    return float(res.statistic), int(res.df), float(chi2.sf(res.statistic, res.df))


def mcnemar_test(
    a_correct: np.ndarray, b_correct: np.ndarray, variant: str = "auto"
) -> tuple[int, int, float, float, str]:
    """(b, c, statistic, p, variant used) of McNemar's test on correct/incorrect pairs."""
    from statsmodels.stats.contingency_tables import mcnemar

    if variant not in MCNEMAR_VARIANTS:
        raise ValueError(f"McNemar variant {variant!r}; expected one of {MCNEMAR_VARIANTS}")
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    t = np.array(
        [
            [np.sum(a_correct & b_correct), np.sum(a_correct & ~b_correct)],
            [np.sum(~a_correct & b_correct), np.sum(~a_correct & ~b_correct)],
        ]
    )
    b, c = int(t[0, 1]), int(t[1, 0])
    exact = variant == "exact" or (variant == "auto" and b + c < EXACT_BELOW)
    if b + c == 0:
        return b, c, 0.0, 1.0, "exact binomial" if exact else "chi2, continuity-corrected"
    res = mcnemar(t, exact=exact, correction=True)
    name = "exact binomial" if exact else "chi2, continuity-corrected"
    return b, c, float(res.statistic), float(min(1.0, res.pvalue)), name


def compare(runs: Sequence[Predictions], mcnemar_variant: str = "auto") -> list[PairResult]:
    """Check that the runs cover the same samples, then test every pair."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two prediction files")
    check_same_samples(runs)
    classes = class_order(runs)
    results = []
    for a, b in itertools.combinations(runs, 2):
        sm_stat, sm_df, sm_p = stuart_maxwell(cross_table(a, b, classes))
        b_correct = dict(zip(b.paths, b.correct))
        bc = np.array([b_correct[p] for p in a.paths], dtype=bool)
        mb, mc, m_stat, m_p, variant = mcnemar_test(a.correct, bc, mcnemar_variant)
        results.append(PairResult(a.source, b.source, len(a), sm_stat, sm_df, sm_p, mb, mc, m_stat, m_p, variant))
    return results


def format_report(runs: Sequence[Predictions], results: Sequence[PairResult]) -> str:
    """Accuracies, then one block per pair."""
    names = {r.source: f"[{i + 1}]" for i, r in enumerate(runs)}
    lines = [f"{len(runs[0])} samples; accuracy:"]
    lines += [f"  {names[r.source]} {r.accuracy:7.2%}  {r.source}" for r in runs]
    lines.append("")
    lines.append(
        f"{'pair':<9} {'Stuart-Maxwell chi2':>20} {'df':>3} {'p':>10}   "
        f"{'McNemar b/c':>12} {'stat':>8} {'p':>10}  variant"
    )
    for res in results:
        pair = f"{names[res.a]}-{names[res.b]}"
        lines.append(
            f"{pair:<9} {res.stuart_maxwell_statistic:>20.4f} {res.stuart_maxwell_df:>3d} "
            f"{res.stuart_maxwell_p:>10.4g}   {f'{res.mcnemar_b}/{res.mcnemar_c}':>12} "
            f"{res.mcnemar_statistic:>8.3f} {res.mcnemar_p:>10.4g}  {res.mcnemar_variant}"
        )
    lines.append("")
    lines.append(
        "McNemar b = first model right and second wrong, c = the reverse. Stuart-Maxwell tests whether "
        "the two models predict the classes in the same proportions."
    )
    return "\n".join(lines)
