"""Figures of a :class:`~atom_plugin.report.Report` (matplotlib, Agg backend, PNG).

The functions take the report as a plain object (its ``scores``, ``examples``, ``sets``,
``tasks``), so this module does not import :mod:`atom_plugin.report`.

* :func:`plot_roc`: one panel per task, ROC curve (ID positive: TPR vs FPR) per OOD set,
  with the operating point at the natural threshold.
* :func:`plot_histograms`: one panel per task, OOD-score histograms of ID vs each OOD set
  (the natural threshold as a vertical line).
* :func:`plot_examples`: a grid of OOD images, rows = examples, columns = tasks
  (clean / corrupted / L∞ / compositional), like the ATOM paper's Fig. 4.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .metrics import roc_points
from .naming import TASK_TITLES


__all__ = ["plot_roc", "plot_histograms", "plot_examples"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg", force=False)
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt

    return plt


def _id_scores(report: Any, task: str) -> np.ndarray:
    ids = report.scores["id"]
    return ids["in"] if task in ("in", "in_out") and "in" in ids else ids["natural"]


def _ood_scores(report: Any, set_name: str, task: str):
    tm = report.scores["ood"].get(set_name, {})
    src = {"in": "natural", "in_out": "linf"}.get(task, task)
    return tm.get(src)


def _panels(n: int):
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return plt, fig, list(axes.flat[:n])


def plot_roc(report: Any, path: str | os.PathLike) -> str:
    """ROC curves per task (ID positive); returns ``path``."""

    tasks = report.tasks
    thr = report.id_metrics.get("threshold")
    plt, fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        id_s = _id_scores(report, task)
        for s in report.sets:
            ood = _ood_scores(report, s, task)
            if ood is None:
                continue
            fpr, tpr, _ = roc_points(id_s, ood)
            auc = report.metrics[s].get(task, {}).get("auroc", float("nan"))
            line, = ax.plot(fpr, tpr, lw=1.2, label=f"{s} (AUROC {100 * auc:.1f})")
            if thr is not None:
                ax.plot([np.mean(ood <= thr)], [np.mean(id_s <= thr)], "o", ms=3, color=line.get_color())
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.axhline(report.config.get("tpr_level", 0.95), color="grey", lw=0.6, ls="--")
        ax.set(title=TASK_TITLES.get(task, task), xlabel="FPR (OOD accepted)", ylabel="TPR (ID accepted)",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_histograms(report: Any, path: str | os.PathLike, bins: int = 40) -> str:
    """OOD-score histograms (ID vs each OOD set) per task; returns ``path``."""

    tasks = report.tasks
    thr = report.id_metrics.get("threshold")
    plt, fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        id_s = _id_scores(report, task)
        arrays = [id_s] + [a for a in (_ood_scores(report, s, task) for s in report.sets) if a is not None]
        allv = np.concatenate(arrays)
        allv = allv[np.isfinite(allv)]
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        ax.hist(id_s, bins=edges, density=True, alpha=0.5, color="black",
                label="ID (attacked)" if task in ("in", "in_out") else "ID")
        for s in report.sets:
            ood = _ood_scores(report, s, task)
            if ood is not None:
                ax.hist(ood, bins=edges, density=True, histtype="step", lw=1.2, label=s)
        if thr is not None:
            ax.axvline(thr, color="red", lw=0.8, ls="--", label="threshold")
        ax.set(title=TASK_TITLES.get(task, task), xlabel="OOD score (higher = more OOD)", ylabel="density")
        ax.locator_params(axis="x", nbins=5)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_examples(report: Any, path: str | os.PathLike, per_set: int = 2) -> str:
    """Grid of example OOD images: rows = (set, example), columns = tasks; returns ``path``."""

    tasks = [t for t in report.tasks if t not in ("in", "in_out")]
    rows = []
    for s in report.sets:
        ex = report.examples.get(s, {})
        n = min([len(ex[t]) for t in tasks if t in ex] or [0])
        rows += [(s, i) for i in range(min(per_set, n))]
    if not rows:
        raise ValueError("the report has no example images (evaluate with keep_examples > 0).")
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(tasks), figsize=(1.6 * len(tasks) + 0.8, 1.6 * len(rows)),
                             squeeze=False)
    for r, (s, i) in enumerate(rows):
        for c, t in enumerate(tasks):
            ax = axes[r][c]
            img = report.examples[s].get(t)
            if img is not None:
                im = img[i]
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(TASK_TITLES.get(t, t), fontsize=8)
            if c == 0:
                ax.set_ylabel(s, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)
