"""atom_plugin.metrics against brute force and scikit-learn (ties included)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from atom_plugin import metrics as M


def _data(seed, n_id, n_ood, levels):
    """Random scores; ``levels`` distinct values make heavy ties (None = continuous)."""
    rng = np.random.default_rng(seed)
    if levels is None:
        return rng.normal(0, 1, n_id), rng.normal(1, 1, n_ood)
    return rng.integers(0, levels, n_id).astype(float), rng.integers(1, levels + 1, n_ood).astype(float)


CASES = [(s, ni, no, lv) for s, (ni, no, lv) in enumerate(
    [(100, 80, None), (37, 53, 5), (200, 150, 12), (20, 20, 3), (1, 7, 4), (9, 1, 4), (500, 300, 40), (60, 60, 2)]
)]


def _brute_fpr(id_s, ood_s, tpr):
    # the smallest threshold t (over candidate values) with fraction(id <= t) >= tpr
    for t in np.sort(np.unique(np.r_[id_s, ood_s])):
        if np.mean(id_s <= t) >= tpr:
            return np.mean(ood_s <= t)
    raise AssertionError


def _brute_auroc(id_s, ood_s):
    d = ood_s[None, :] - id_s[:, None]
    return (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / d.size


def _brute_det_err(id_s, ood_s):
    best = 0.5
    for t in np.unique(np.r_[id_s, ood_s]):
        best = min(best, 0.5 * (1 - np.mean(id_s <= t)) + 0.5 * np.mean(ood_s <= t))
    return best


@pytest.mark.parametrize("seed,n_id,n_ood,levels", CASES)
def test_against_sklearn_and_brute_force(seed, n_id, n_ood, levels):
    a, b = _data(seed, n_id, n_ood, levels)
    scores = np.r_[a, b]
    is_id = np.r_[np.ones(a.size), np.zeros(b.size)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.ConstantScoreWarning)
        # AUROC, AUPR: sklearn reference
        assert abs(M.auroc(a, b) - roc_auc_score(is_id, -scores)) < 1e-9
        assert abs(M.auroc(a, b) - _brute_auroc(a, b)) < 1e-9
        assert abs(M.aupr_in(a, b) - average_precision_score(is_id, -scores)) < 1e-9
        assert abs(M.aupr_out(a, b) - average_precision_score(1 - is_id, scores)) < 1e-9
        for tpr in (0.95, 0.9, 0.5, 1.0, 0.3333):
            # ID-positive FPR: the first ROC point (no interpolation) with TPR >= level
            fpr_r, tpr_r, _ = roc_curve(is_id, -scores, drop_intermediate=False)
            ref = fpr_r[np.argmax(tpr_r >= tpr)]
            assert abs(M.fpr_at_tpr(a, b, tpr) - ref) < 1e-9
            assert abs(M.fpr_at_tpr(a, b, tpr) - _brute_fpr(a, b, tpr)) < 1e-9
            # the threshold keeps >= tpr of ID and is the smallest such ID score
            t = M.threshold_at_tpr(a, tpr)
            assert np.mean(a <= t) >= tpr and t in a
            assert np.mean(a < t) < tpr
            # OOD-positive FPR95 (OpenOOD): roc_curve with OOD positive
            fpr_o, tpr_o, _ = roc_curve(1 - is_id, scores, drop_intermediate=False)
            assert abs(M.fpr95_ood_positive(a, b, tpr) - fpr_o[np.argmax(tpr_o >= tpr)]) < 1e-9
        assert abs(M.detection_error(a, b) - _brute_det_err(a, b)) < 1e-9


def test_two_fprs_differ_and_are_named():
    # ID tightly clustered, OOD spread: the two "FPR95" quantities differ a lot
    a = np.linspace(0, 1, 100)
    b = np.r_[np.linspace(0, 1, 50), np.linspace(5, 6, 50)]
    d = M.ood_metrics(a, b)
    assert math.isclose(d["fpr"], 47 / 100)  # 47 OOD scores j/49 <= 94/99 (the 95th ID score)
    assert d["fpr95_ood_positive"] != d["fpr"]
    assert set(d) >= {"fpr", "auroc", "aupr_in", "aupr_out", "detection_error", "fpr95_ood_positive",
                      "threshold", "n_id", "n_ood"}


def test_perfect_and_inverted():
    a, b = np.arange(10.0), np.arange(10.0) + 100
    assert M.fpr_at_tpr(a, b) == 0 and M.auroc(a, b) == 1 and M.detection_error(a, b) == 0
    assert M.aupr_in(a, b) == 1 and M.aupr_out(a, b) == 1
    assert M.fpr_at_tpr(b, a) == 1 and M.auroc(b, a) == 0


def test_ties_at_threshold_are_accepted():
    # 20 ID scores, the 19th smallest (95%) is 1.0; an OOD score equal to it is accepted
    a = np.r_[np.zeros(18), 1.0, 2.0]
    assert M.threshold_at_tpr(a) == 1.0
    assert M.fpr_at_tpr(a, [1.0, 1.5, 3.0]) == pytest.approx(1 / 3)


def test_inputs_torch_numpy_list_agree():
    a, b = _data(3, 30, 40, 6)
    ref = M.ood_metrics(a, b)
    assert M.ood_metrics(torch.tensor(a, dtype=torch.float64), torch.tensor(b)) == ref
    assert M.ood_metrics(list(a), list(b)) == ref
    assert M.auroc(a.reshape(-1, 1), b) == ref["auroc"]


def test_errors_and_constant_warning():
    with pytest.raises(ValueError, match="id_scores.*empty"):
        M.auroc([], [1.0])
    with pytest.raises(ValueError, match="ood_scores.*NaN"):
        M.fpr_at_tpr([1.0], [np.nan, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        M.auroc(np.zeros((3, 3)), [1.0])
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr([1.0], [2.0], tpr=0.0)
    with pytest.raises(TypeError, match="id_scores"):
        M.auroc(["a"], [1.0])
    with pytest.warns(M.ConstantScoreWarning, match="do(es)? not separate"):
        d = M.ood_metrics(np.ones(5), np.ones(4))
    assert d["auroc"] == 0.5 and d["fpr"] == 1.0 and d["detection_error"] == 0.5


def test_accumulator_matches_one_shot():
    a, b = _data(5, 64, 48, 9)
    m = M.OODMetrics()
    for chunk in np.array_split(a, 3):
        m.update(torch.tensor(chunk), is_ood=False)
    m.update(b[:10], np.ones(10, dtype=int))
    m.update_labels(torch.tensor(np.r_[b[10:], a[:0]]), torch.full((38,), -1))
    assert m.compute() == M.ood_metrics(a, b)
    # mixed batch with a bool mask
    m2 = M.OODMetrics().update(np.r_[a, b], np.r_[np.zeros(a.size), np.ones(b.size)].astype(bool))
    assert m2.compute() == M.ood_metrics(a, b)
    with pytest.raises(ValueError, match="update_labels"):
        M.OODMetrics().update([1.0, 2.0], [3, -1])
    with pytest.raises(ValueError, match="both ID and OOD"):
        M.OODMetrics().update([1.0], False).compute()
    m.reset()
    with pytest.raises(ValueError):
        m.compute()


def test_roc_points_monotone():
    a, b = _data(7, 50, 50, 5)
    fpr, tpr, thr = M.roc_points(a, b)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) > 0)
    assert abs(np.trapezoid(tpr, fpr) - M.auroc(a, b)) < 1e-9
