"""`glamor compare`: Stuart–Maxwell and McNemar on crafted prediction files, checked against the
formulas written out by hand; mismatched files are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from glamor_lightning.analysis.compare import SampleMismatchError, compare, cross_table, mcnemar_test, stuart_maxwell
from glamor_lightning.analysis.predictions import read_predictions, write_predictions
from glamor_lightning.cli import main
from glamor_lightning.data.classes import CLASSES


def hand_stuart_maxwell(table: np.ndarray) -> tuple[float, int, float]:
    """d = row margins − column margins (first k−1); S_ii = n_i. + n_.i − 2 n_ii, S_ij = −(n_ij + n_ji);
    chi2 = d' S⁻¹ d with k−1 degrees of freedom."""
    n = np.asarray(table, dtype=float)
    k = n.shape[0]
    rows, cols = n.sum(1), n.sum(0)
    d = (rows - cols)[: k - 1]
    s = np.empty((k - 1, k - 1))
    for i in range(k - 1):
        for j in range(k - 1):
            s[i, j] = rows[i] + cols[i] - 2 * n[i, i] if i == j else -(n[i, j] + n[j, i])
    chi2 = float(d @ np.linalg.inv(s) @ d)
    return chi2, k - 1, float(stats.chi2.sf(chi2, k - 1))


def samples_from_table(table: np.ndarray, true_of: callable) -> tuple[list, list, list, list]:
    """Paths, true labels and the two models' predictions that realise a cross-table of predictions."""
    paths, true, pred_a, pred_b = [], [], [], []
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            for _ in range(int(table[i, j])):
                k = len(paths)
                paths.append(f"test/{CLASSES[i]}/img_{k:04d}.png")
                true.append(true_of(k, i, j))
                pred_a.append(CLASSES[i])
                pred_b.append(CLASSES[j])
    return paths, true, pred_a, pred_b


def write(path, paths, true, pred, order=None):
    order = list(range(len(paths))) if order is None else order
    probs = np.full((len(paths), 7), 1 / 7)
    return write_predictions(
        path, [paths[i] for i in order], [true[i] for i in order], [pred[i] for i in order], probs[order], CLASSES
    )


# a 7×7 cross-table of two models' predictions with every class informative
TABLE = np.array(
    [
        [9, 2, 0, 1, 0, 0, 1],
        [1, 7, 1, 0, 0, 2, 0],
        [0, 3, 8, 1, 0, 0, 0],
        [2, 0, 0, 12, 1, 0, 0],
        [0, 1, 0, 2, 10, 1, 1],
        [1, 0, 2, 0, 3, 6, 0],
        [0, 0, 1, 0, 0, 1, 11],
    ]
)


def true_label(k: int, i: int, j: int) -> str:
    # truth: A's class on even samples, B's on odd ones -> both models are sometimes right, sometimes wrong
    return CLASSES[i] if k % 2 == 0 else CLASSES[j]


@pytest.fixture
def files(tmp_path):
    paths, true, pa, pb = samples_from_table(TABLE, true_label)
    rng = np.random.default_rng(0)
    a = write(tmp_path / "a.csv", paths, true, pa)
    b = write(tmp_path / "b.csv", paths, true, pb, order=list(rng.permutation(len(paths))))  # order differs
    return a, b, paths, true, pa, pb


def test_stuart_maxwell_matches_the_formula_by_hand(files):
    a, b, *_ = files
    ra, rb = read_predictions(a), read_predictions(b)
    table = cross_table(ra, rb, CLASSES)
    assert np.array_equal(table, TABLE)
    chi2, df, p = stuart_maxwell(table)
    h_chi2, h_df, h_p = hand_stuart_maxwell(TABLE)
    assert df == h_df == 6
    assert chi2 == pytest.approx(h_chi2, rel=1e-9)
    assert p == pytest.approx(h_p, rel=1e-6)


def test_stuart_maxwell_on_a_small_table_by_hand():
    t = np.array([[5, 3, 1], [1, 6, 2], [4, 0, 7]])
    # margins: rows 9, 9, 11; columns 10, 9, 10 -> d = (-1, 0)
    # S = [[9+10-10, -(3+1)], [-(3+1), 9+9-12]] = [[9, -4], [-4, 6]]; det = 38
    # chi2 = d' S^-1 d = (-1)^2 * 6 / 38 = 3/19
    chi2, df, p = stuart_maxwell(t)
    assert chi2 == pytest.approx(3 / 19, rel=1e-12)
    assert df == 2 and p == pytest.approx(np.exp(-3 / 38), rel=1e-9)  # chi2(2) survival = exp(-x/2)


def test_stuart_maxwell_leaves_out_classes_without_disagreement():
    t = np.diag([4, 0, 5, 3]).astype(float)
    t[0, 2], t[2, 0], t[3, 0] = 3, 1, 2  # class 1: no disagreement (dropped); class 3: one off-diagonal cell
    chi2, df, p = stuart_maxwell(t)
    kept = t[np.ix_([0, 2, 3], [0, 2, 3])]
    h = hand_stuart_maxwell(kept)
    assert (chi2, df) == (pytest.approx(h[0]), 2) and p == pytest.approx(h[2])
    assert stuart_maxwell(np.diag([3, 4, 5])) == (0.0, 0, 1.0)  # identical predictions: nothing to test


def test_mcnemar_exact_and_chi2_by_hand():
    a = np.array([1] * 10 + [1] * 7 + [0] * 2 + [0] * 5, dtype=bool)
    b = np.array([1] * 10 + [0] * 7 + [1] * 2 + [0] * 5, dtype=bool)
    b_, c_, stat, p, variant = mcnemar_test(a, b, "auto")  # b + c = 9 < 25: exact
    assert (b_, c_, variant) == (7, 2, "exact binomial")
    assert p == pytest.approx(2 * stats.binom.cdf(2, 9, 0.5))  # = 2 * 46/512
    assert p == pytest.approx(2 * (1 + 9 + 36) / 512)
    _, _, stat, p, variant = mcnemar_test(a, b, "chi2")
    assert variant == "chi2, continuity-corrected"
    assert stat == pytest.approx((abs(7 - 2) - 1) ** 2 / 9)
    assert p == pytest.approx(stats.chi2.sf(16 / 9, 1))
    assert mcnemar_test(a, a)[3] == 1.0


def test_compare_command_prints_accuracies_and_every_pair(files, tmp_path, capsys):
    a, b, paths, true, pa, pb = files
    c = write(tmp_path / "c.csv", paths, true, true)  # a perfect model
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), str(c), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    acc_a = np.mean([t == p for t, p in zip(true, pa)])
    assert f"{acc_a:7.2%}" in text and "100.00%" in text
    assert "[1]-[2]" in text and "[1]-[3]" in text and "[2]-[3]" in text
    result = json.loads(out_json.read_text())
    assert len(result["pairs"]) == 3
    ab = result["pairs"][0]
    assert ab["stuart_maxwell_p"] == pytest.approx(hand_stuart_maxwell(TABLE)[2], rel=1e-6)
    correct_a = np.array([t == p for t, p in zip(true, pa)])
    correct_b = np.array([t == p for t, p in zip(true, pb)])
    bb, cc = int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))
    assert (ab["mcnemar_b"], ab["mcnemar_c"]) == (bb, cc)
    assert bb + cc >= 25 and ab["mcnemar_variant"] == "chi2, continuity-corrected"
    assert ab["mcnemar_p"] == pytest.approx(stats.chi2.sf((abs(bb - cc) - 1) ** 2 / (bb + cc), 1))


def test_files_with_other_samples_are_a_clear_error(files, tmp_path, capsys):
    a, _, paths, true, pa, _ = files
    short = write(tmp_path / "short.csv", paths[:-2], true[:-2], pa[:-2])
    with pytest.raises(SampleMismatchError, match=r"2 only in .*a.csv: test/.*img_0089.png"):
        compare([read_predictions(a), read_predictions(short)])
    relabelled = list(true)
    relabelled[3] = "Sad" if relabelled[3] != "Sad" else "Happy"
    other = write(tmp_path / "other.csv", paths, relabelled, pa)
    with pytest.raises(SampleMismatchError, match=rf"1 samples have different true labels.*{paths[3]}"):
        compare([read_predictions(a), read_predictions(other)])
    assert main(["compare", str(a), str(short)]) == 2
    assert "do not cover the same samples" in capsys.readouterr().err
