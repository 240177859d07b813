"""OOD detection metrics on OOD scores (higher = more OOD).

Conventions (the ATOM paper's, Section 5.1):

* **In-distribution (ID) is the positive class.**  A detector with threshold ``t``
  *accepts* an input as ID iff ``score <= t``.  ``TPR(t)`` = fraction of ID inputs
  accepted, ``FPR(t)`` = fraction of OOD inputs accepted.  An OOD input whose score
  ties the threshold is accepted (counted as a false positive).
* :func:`fpr_at_tpr` (``"fpr"`` in result dicts) is the paper's *FPR at 95% TPR* (= "FPR
  at 5% FNR"): ``t`` is the smallest ID score such that at least 95% of ID scores are
  ``<= t``, i.e. the ``k``-th smallest ID score with ``k`` the smallest integer with
  ``k / n_id >= tpr``; FPR = fraction of OOD scores ``<= t``.  This is exactly
  ``fpr[argmax(tpr >= 0.95)]`` of ``sklearn.metrics.roc_curve(is_id, -score)`` (no
  interpolation between ROC points).
* :func:`fpr95_ood_positive` is the *other* "FPR95" (OpenOOD, pytorch-ood): OOD is the
  positive class, the threshold flags at least 95% of OOD inputs (``score >= t``) and the
  result is the fraction of ID inputs flagged.  Different number; never mixed with the above.
* :func:`auroc` = ``roc_auc_score(is_id, -score)``: P(score_id < score_ood) with ties
  counting 1/2.  :func:`aupr_in` = ``average_precision_score(is_id, -score)``,
  :func:`aupr_out` = ``average_precision_score(is_ood, score)`` (step-wise average
  precision, no interpolation).  :func:`detection_error` = min over thresholds of
  ``0.5 (1 - TPR) + 0.5 FPR`` (including "accept nothing", which gives 0.5).

All functions take 1-D numpy arrays, torch tensors (any device) or sequences; they raise
``ValueError`` on empty inputs or NaN, and warn (:class:`ConstantScoreWarning`) when all
scores are equal (the detector separates nothing; AUROC is then 0.5).  Results are Python
floats in [0, 1] (fractions, not percent).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict

import numpy as np

from ._validation import check_float

__all__ = [
    "ConstantScoreWarning", "threshold_at_tpr", "fpr_at_tpr", "fpr95_ood_positive", "auroc",
    "aupr_in", "aupr_out", "detection_error", "roc_points", "ood_metrics", "OODMetrics",
]


class ConstantScoreWarning(UserWarning):
    """All scores (ID and OOD together) are equal: the detector separates nothing."""


def _as_scores(x: Any, name: str) -> np.ndarray:
    """Any 1-D array-like (numpy, torch on any device, list) -> float64 numpy array."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a 1-D array of numbers (numpy, torch or list), got {type(x).__name__}.") from None
    if arr.ndim != 1:
        if arr.ndim == 0 or arr.size != max(arr.shape):
            raise ValueError(f"`{name}` must be 1-D (one score per input), got shape {arr.shape}.")
        arr = arr.reshape(-1)  # (N, 1) / (1, N) columns are accepted
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty; every metric needs at least one score.")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"`{name}` contains NaN ({n_nan} of {arr.size} scores); check the detector for "
            "overflow (use float32/float64) or the inputs for NaN."
        )
    return arr


def _pair(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _as_scores(id_scores, "id_scores")
    b = _as_scores(ood_scores, "ood_scores")
    lo = min(a.min(), b.min())
    if lo == max(a.max(), b.max()):
        warnings.warn(
            f"All {a.size + b.size} ID and OOD scores equal {lo:.6g}: the detector does not "
            "separate ID from OOD (AUROC 0.5, FPR 1.0). Check that the model is trained and "
            "that scores are not saturated (e.g. softmax outputs rounding to 1).",
            ConstantScoreWarning, stacklevel=3,
        )
    return a, b


def _check_tpr(tpr: float) -> float:
    return check_float(tpr, "tpr", low=0.0, high=1.0, low_open=True)


def _kth_for_rate(n: int, rate: float) -> int:
    """Smallest k in 1..n with k / n >= rate (float comparison as sklearn's roc_curve)."""
    ks = np.arange(1, n + 1, dtype=np.int64)
    return int(np.argmax(ks / n >= rate)) + 1  # rate <= 1 guarantees k = n qualifies


def threshold_at_tpr(id_scores: Any, tpr: float = 0.95) -> float:
    """The acceptance threshold ``t`` keeping at least ``tpr`` of ID inputs (``score <= t``).

    ``t`` is the ``k``-th smallest ID score, ``k = min{k : k / n_id >= tpr}``; it is the
    smallest threshold with TPR >= ``tpr``.
    """
    tpr = _check_tpr(tpr)
    a = np.sort(_as_scores(id_scores, "id_scores"))
    return float(a[_kth_for_rate(a.size, tpr) - 1])


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` TPR with ID positive (the paper's "FPR at 95% TPR" / "at 5% FNR").

    Fraction of OOD scores ``<= threshold_at_tpr(id_scores, tpr)`` (ties accepted).
    """
    a, b = _pair(id_scores, ood_scores)
    t = threshold_at_tpr(a, tpr)
    return float(np.mean(b <= t))


def fpr95_ood_positive(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """OpenOOD / pytorch-ood "FPR95": OOD positive, flagged iff ``score >= t``.

    ``t`` is the largest threshold flagging at least ``tpr`` of OOD inputs (the ``k``-th
    largest OOD score, ``k = min{k : k / n_ood >= tpr}``); returns the fraction of ID
    scores ``>= t``.  Equals ``fpr[argmax(tpr >= 0.95)]`` of ``roc_curve(is_ood, score)``.
    This is NOT the paper's FPR (:func:`fpr_at_tpr`).
    """
    tpr = _check_tpr(tpr)
    a, b = _pair(id_scores, ood_scores)
    b_desc = np.sort(b)[::-1]
    t = b_desc[_kth_for_rate(b.size, tpr) - 1]
    return float(np.mean(a >= t))


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve: P(score_id < score_ood) + 0.5 P(score_id == score_ood).

    Equals ``sklearn.metrics.roc_auc_score(is_id, -score)`` (and ``roc_auc_score(is_ood,
    score)``).  Computed with mid-ranks (Mann-Whitney U), O(n log n).
    """
    a, b = _pair(id_scores, ood_scores)
    allv = np.concatenate([a, b])
    uniq, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    midrank = ends - (counts - 1) / 2.0  # average 1-based rank of each tie group
    ranks_ood = midrank[inv[a.size:]]
    u = ranks_ood.sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision, positives = ``pos`` (higher value = more positive);
    sklearn's ``average_precision_score`` (ties share one threshold)."""
    vals = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-vals, kind="mergesort")
    vals, is_pos = vals[order], is_pos[order]
    # last index of each group of equal values (descending order)
    last = np.r_[np.nonzero(np.diff(vals))[0], vals.size - 1]
    tp = np.cumsum(is_pos)[last]
    seen = (last + 1).astype(np.float64)
    precision = tp / seen
    recall = tp / pos.size
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with ID positive: ``average_precision_score(is_id, -score)``."""
    a, b = _pair(id_scores, ood_scores)
    return _average_precision(-a, -b)


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD positive: ``average_precision_score(is_ood, score)``."""
    a, b = _pair(id_scores, ood_scores)
    return _average_precision(b, a)


def roc_points(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with ID positive: ``(fpr, tpr, thresholds)``, one point per distinct
    score plus the origin (threshold ``-inf``: accept nothing).  ``tpr[i]``/``fpr[i]`` are
    the fractions of ID/OOD scores ``<= thresholds[i]``; arrays increase."""
    a, b = _as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores")
    thr = np.unique(np.concatenate([a, b]))
    tpr = np.searchsorted(np.sort(a), thr, side="right") / a.size
    fpr = np.searchsorted(np.sort(b), thr, side="right") / b.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[-np.inf, thr]


def detection_error(id_scores: Any, ood_scores: Any) -> float:
    """``min_t 0.5 (1 - TPR(t)) + 0.5 FPR(t)`` over all thresholds (ID positive, equal
    priors), including accepting nothing (0.5)."""
    a, b = _pair(id_scores, ood_scores)
    fpr, tpr, _ = roc_points(a, b)
    return float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))


def ood_metrics(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> Dict[str, float]:
    """All metrics in one dict (fractions in [0, 1]):

    ``fpr`` (FPR at ``tpr`` TPR, ID positive; the paper's FPR), ``auroc``, ``aupr_in``,
    ``aupr_out``, ``detection_error``, ``fpr95_ood_positive`` (OpenOOD's, at the same
    ``tpr``), ``threshold`` (of ``fpr``), ``tpr_level``, ``n_id``, ``n_ood``.
    """
    a, b = _pair(id_scores, ood_scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantScoreWarning)  # warned once above
        return {
            "fpr": fpr_at_tpr(a, b, tpr),
            "auroc": auroc(a, b),
            "aupr_in": aupr_in(a, b),
            "aupr_out": aupr_out(a, b),
            "detection_error": detection_error(a, b),
            "fpr95_ood_positive": fpr95_ood_positive(a, b, tpr),
            "threshold": threshold_at_tpr(a, tpr),
            "tpr_level": float(tpr),
            "n_id": int(a.size),
            "n_ood": int(b.size),
        }


class OODMetrics:
    """Accumulate scores batch by batch, then :meth:`compute` every metric (like
    pytorch-ood's ``OODMetrics``, but with the paper's ID-positive FPR as ``"fpr"``).

    Example::

        m = OODMetrics()
        for x, _ in id_loader:  m.update(detector.predict(x), is_ood=False)
        for x, _ in ood_loader: m.update(detector.predict(x), is_ood=True)
        m.compute()  # {"fpr": ..., "auroc": ..., ...}
    """

    def __init__(self, tpr: float = 0.95) -> None:
        self.tpr = _check_tpr(tpr)
        self.reset()

    def reset(self) -> "OODMetrics":
        self._id: list[np.ndarray] = []
        self._ood: list[np.ndarray] = []
        return self

    def update(self, scores: Any, is_ood: Any) -> "OODMetrics":
        """Add ``scores`` ``(B,)`` with ``is_ood``: a bool, or a ``(B,)`` bool / 0-1 array
        (1 = OOD).  For class labels with ``-1`` (negative) marking OOD use
        :meth:`update_labels`."""
        s = _as_scores(scores, "scores")
        if isinstance(is_ood, (bool, np.bool_)):
            flags = np.full(s.size, bool(is_ood))
        else:
            f = np.asarray(_to_numpy(is_ood)).reshape(-1)
            if f.shape != s.shape:
                raise ValueError(f"`is_ood` must have one entry per score ({s.size}), got shape {f.shape}.")
            if f.dtype != np.bool_:
                if not np.all((f == 0) | (f == 1)):
                    raise ValueError(
                        "`is_ood` must be boolean or 0/1 (1 = OOD); for class labels where "
                        "negative values mark OOD inputs use OODMetrics.update_labels(scores, labels)."
                    )
                f = f.astype(bool)
            flags = f
        self._id.append(s[~flags])
        self._ood.append(s[flags])
        return self

    def update_labels(self, scores: Any, labels: Any) -> "OODMetrics":
        """Add ``scores`` with class ``labels``: negative labels (``-1``) are OOD (the
        dataset convention of atom_plugin and pytorch-ood)."""
        lab = np.asarray(_to_numpy(labels)).reshape(-1)
        return self.update(scores, lab < 0)

    def compute(self) -> Dict[str, float]:
        """:func:`ood_metrics` of everything seen so far."""
        id_s = np.concatenate(self._id) if self._id else np.zeros(0)
        ood_s = np.concatenate(self._ood) if self._ood else np.zeros(0)
        if id_s.size == 0 or ood_s.size == 0:
            raise ValueError(
                f"OODMetrics needs both ID and OOD scores, got {id_s.size} ID and {ood_s.size} OOD; "
                "call update(...) with is_ood=False and is_ood=True batches first."
            )
        return ood_metrics(id_s, ood_s, self.tpr)


def _to_numpy(x: Any) -> Any:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return x

