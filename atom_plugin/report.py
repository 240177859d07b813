"""The result of :func:`atom_plugin.evaluation.evaluate`: tables, JSON, CSV and plots.

A :class:`Report` holds, for every OOD set and task, the metric dict of
:func:`atom_plugin.metrics.ood_metrics` (fractions in [0, 1]), the ID metrics (accuracy,
end-to-end accuracy, threshold, FNR), the raw scores (so every number can be recomputed)
and a few example images.  The mean over OOD sets is available as the set ``"mean"``.

``report.table()`` renders the paper's Table 1 layout (rows = OOD sets + mean; column
groups Natural / Corruption / L∞ / Comp., each FPR and AUROC, in percent);
``Report.combine({"OE": r1, "ATOM": r2}).table()`` (or :func:`compare_table`) renders
one row per detector.  ``report.save(folder)`` writes ``table.md``, ``report.json``,
``metrics.csv``, ``examples.npz`` and the plots ``roc.png``, ``histograms.png``,
``examples.png``; :meth:`Report.load` reads a folder or JSON file back.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from .naming import METRIC_TITLES, TASK_TITLES, task_order

__all__ = ["Report", "Comparison", "compare_table", "TASK_TITLES", "METRIC_TITLES"]

CSV_METRICS = ("fpr", "auroc", "aupr_in", "aupr_out", "detection_error", "fpr95_ood_positive",
               "fpr_at_threshold", "tpr_at_threshold", "threshold", "n_id", "n_ood")
_AVERAGED = ("fpr", "auroc", "aupr_in", "aupr_out", "detection_error", "fpr95_ood_positive",
             "fpr_at_threshold", "tpr_at_threshold")
JSON_VERSION = 1


_task_order = task_order


class Report:
    """Evaluation results (see the module docstring).

    Attributes:
        metrics: ``{set: {task: {metric: value}}}`` (fractions).
        id_metrics: ``{"accuracy", "e2e_accuracy", "fnr", "tpr", "threshold", "n_id", ...}``.
        scores: ``{"id": {"natural": array, ["in": array]}, "ood": {set: {task: array}}}``.
        examples: ``{set or "__id__": {task: uint8 array (N, H, W, C)}}``.
        config: the evaluation settings.
        name: a label (e.g. the method), used by :meth:`combine`.
    """

    def __init__(self, metrics: Mapping, id_metrics: Mapping | None = None, scores: Mapping | None = None,
                 examples: Mapping | None = None, config: Mapping | None = None, name: str | None = None) -> None:
        if not metrics:
            raise ValueError("`metrics` is empty; a Report needs at least one OOD set.")
        self.metrics = {s: {t: dict(m) for t, m in tm.items()} for s, tm in metrics.items()}
        self.id_metrics = dict(id_metrics or {})
        self.scores = scores or {}
        self.examples = examples or {}
        self.config = dict(config or {})
        self.name = name

    # ------------------------------------------------------------------ access
    @property
    def sets(self) -> list[str]:
        """OOD set names in evaluation order."""
        return list(self.metrics)

    @property
    def tasks(self) -> list[str]:
        """Tasks present (paper order: natural, corruption, linf, compositional, in, in_out)."""
        seen: set[str] = set()
        for tm in self.metrics.values():
            seen.update(tm)
        return _task_order(seen)

    @property
    def mean(self) -> Dict[str, Dict[str, float]]:
        """``{task: {metric: mean over OOD sets}}`` (sets lacking the task are skipped)."""
        out: Dict[str, Dict[str, float]] = {}
        for task in self.tasks:
            rows = [tm[task] for tm in self.metrics.values() if task in tm]
            out[task] = {k: float(np.mean([r[k] for r in rows])) for k in _AVERAGED if all(k in r for r in rows)}
            out[task]["n_sets"] = len(rows)
        return out

    def get(self, set_name: str = "mean", task: str = "natural", metric: str = "fpr") -> float:
        """One number, e.g. ``report.get("mean", "linf", "fpr")`` (a fraction)."""
        src = self.mean if set_name == "mean" else self.metrics.get(set_name)
        if src is None:
            raise ValueError(f"`set_name` must be 'mean' or one of {self.sets}, got {set_name!r}.")
        if task not in src:
            raise ValueError(f"`task` must be one of {list(src)}, got {task!r}.")
        if metric not in src[task]:
            raise ValueError(f"`metric` must be one of {sorted(src[task])}, got {metric!r}.")
        return float(src[task][metric])

    @property
    def warnings(self) -> list[str]:
        """Warnings the evaluation raised about its own numbers (a likely flipped score sign,
        gradient masking, early stopping, ...); shown under :meth:`table` and kept in the JSON."""
        return list(self.config.get("warnings", [])) + [f"note: {n}" for n in self.config.get("notes", [])]

    # ------------------------------------------------------------------ tables
    def table(self, metrics: Sequence[str] = ("fpr", "auroc"), tasks: Sequence[str] | None = None,
              percent: bool = True, digits: int = 2, id_summary: bool = True) -> str:
        """Markdown table: rows = OOD sets + ``mean``; per task the chosen metrics.

        FPR is FPR at 95% TPR with ID positive (the paper's); values in percent by default.
        """
        tasks = list(tasks) if tasks is not None else self.tasks
        rows = [(s, self.metrics[s]) for s in self.sets] + [("**mean**", self.mean)]
        out = _markdown(["OOD set"], tasks, metrics, rows, percent, digits)
        if id_summary and self.id_metrics:
            out += "\n\n" + self._id_line(percent, digits)
        if self.warnings:
            out += "\n\n" + "\n".join(f"> WARNING: {w}" if not w.startswith("note: ") else f"> {w}"
                                       for w in self.warnings)
        return out

    def _id_line(self, percent: bool, digits: int) -> str:
        f = (lambda v: f"{100 * v:.{digits}f}%") if percent else (lambda v: f"{v:.{digits + 2}f}")
        m = self.id_metrics
        parts = [f"ID: n={m.get('n_id')}"]
        for key, title in (("accuracy", "accuracy"), ("e2e_accuracy", "end-to-end accuracy"), ("fnr", "FNR"),
                           ("tpr_in", "TPR under In-attack"), ("e2e_accuracy_in", "end-to-end accuracy under In-attack")):
            if m.get(key) is not None:
                parts.append(f"{title} {f(m[key])}")
        if "threshold" in m:
            parts.append(f"threshold t={m['threshold']:.6g} (accept iff score <= t)")
        return "; ".join(parts) + "."

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Report(name={self.name!r}, sets={self.sets}, tasks={self.tasks})"

    # ------------------------------------------------------------------ JSON / CSV
    def to_dict(self, include_scores: bool = True) -> dict:
        d = {
            "version": JSON_VERSION, "name": self.name, "config": _jsonable(self.config),
            "id_metrics": _jsonable(self.id_metrics), "metrics": _jsonable(self.metrics),
            "mean": _jsonable(self.mean),
        }
        if include_scores and self.scores:
            d["scores"] = _jsonable(self.scores)
        return d

    def to_json(self, path: str | os.PathLike | None = None, include_scores: bool = True, indent: int = 1) -> str:
        """JSON text (written to ``path`` if given).  Scores are included by default so
        the report can be reloaded and its numbers recomputed; images are not (see
        :meth:`save`)."""
        text = json.dumps(self.to_dict(include_scores), indent=indent, allow_nan=True)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping) -> "Report":
        if not isinstance(d, Mapping) or "metrics" not in d:
            raise ValueError("not a Report dict: it has no 'metrics' key.")
        scores = d.get("scores") or {}
        if scores:
            scores = {
                "id": {k: np.asarray(v, dtype=np.float64) for k, v in scores.get("id", {}).items()},
                "ood": {s: {t: np.asarray(v, dtype=np.float64) for t, v in tm.items()}
                        for s, tm in scores.get("ood", {}).items()},
            }
        return cls(metrics=d["metrics"], id_metrics=d.get("id_metrics"), scores=scores,
                   config=d.get("config"), name=d.get("name"))

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Report":
        """From JSON text or a ``report.json`` path."""
        s = os.fspath(text_or_path)
        if not s.lstrip().startswith("{"):
            with open(s, encoding="utf-8") as fh:
                s = fh.read()
        return cls.from_dict(json.loads(s))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Report":
        """Read a folder written by :meth:`save` (JSON + example images) or a JSON file."""
        path = os.fspath(path)
        if os.path.isdir(path):
            rep = cls.from_json(os.path.join(path, "report.json"))
            ex = os.path.join(path, "examples.npz")
            if os.path.exists(ex):
                with np.load(ex, allow_pickle=False) as z:
                    for key in z.files:
                        s, _, t = key.partition("::")
                        rep.examples.setdefault(s, {})[t] = z[key]
            return rep
        if not os.path.exists(path):
            raise FileNotFoundError(f"no report at {path!r}: expected a folder from Report.save or a JSON file.")
        return cls.from_json(path)

    def rows(self) -> list[dict]:
        """Flat rows ``{name, set, task, metric...}`` (sets then ``mean``)."""
        out = []
        for s in self.sets + ["mean"]:
            src = self.mean if s == "mean" else self.metrics[s]
            for t in _task_order(src):
                row = {"name": self.name or "", "set": s, "task": t}
                row.update({k: src[t].get(k, "") for k in CSV_METRICS})
                out.append(row)
        return out

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV of :meth:`rows` (fractions, not percent)."""
        return _write_csv(self.rows(), ["name", "set", "task", *CSV_METRICS], path)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike, plots: bool = True) -> dict[str, str]:
        """Write ``table.md``, ``report.json``, ``metrics.csv``, ``examples.npz`` and (with
        ``plots``) ``roc.png``, ``histograms.png``, ``examples.png``.  Returns the paths."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        paths = {"table": os.path.join(folder, "table.md"), "json": os.path.join(folder, "report.json"),
                 "csv": os.path.join(folder, "metrics.csv")}
        title = f"# OOD evaluation{': ' + self.name if self.name else ''}\n\n"
        note = ("FPR = FPR at 95% TPR with in-distribution as positive (the paper's 'FPR at 5% FNR'); "
                "all numbers in percent.\n\n")
        with open(paths["table"], "w", encoding="utf-8") as fh:
            fh.write(title + note + self.table() + "\n")
        self.to_json(paths["json"])
        self.to_csv(paths["csv"])
        arrays = {f"{s}::{t}": a for s, tm in self.examples.items() for t, a in tm.items() if a is not None}
        if arrays:
            paths["examples_npz"] = os.path.join(folder, "examples.npz")
            np.savez_compressed(paths["examples_npz"], **arrays)
        if plots:
            from . import plots as P

            if self.scores:
                paths["roc"] = P.plot_roc(self, os.path.join(folder, "roc.png"))
                paths["histograms"] = P.plot_histograms(self, os.path.join(folder, "histograms.png"))
            if any(self.examples.get(s) for s in self.sets):
                paths["examples"] = P.plot_examples(self, os.path.join(folder, "examples.png"))
        return paths

    # ------------------------------------------------------------------ comparison
    @staticmethod
    def combine(reports: Mapping[str, "Report"]) -> "Comparison":
        """Several reports (e.g. ``{"OE": r1, "ATOM": r2}``) as one comparison."""
        return Comparison(reports)


class Comparison:
    """Several :class:`Report`s side by side: one row per detector/method."""

    def __init__(self, reports: Mapping[str, Report]) -> None:
        if not isinstance(reports, Mapping) or not reports:
            raise ValueError("`reports` must be a non-empty dict {method name: Report}.")
        for k, r in reports.items():
            if not isinstance(r, Report):
                raise TypeError(f"`reports[{k!r}]` must be a Report, got {type(r).__name__}.")
        self.reports = dict(reports)

    @property
    def tasks(self) -> list[str]:
        seen: set[str] = set()
        for r in self.reports.values():
            seen.update(r.tasks)
        return _task_order(seen)

    def _src(self, r: Report, set_name: str) -> dict:
        if set_name == "mean":
            return r.mean
        if set_name not in r.metrics:
            raise ValueError(f"`set_name` {set_name!r} is not in every report; use 'mean' or one of {r.sets}.")
        return r.metrics[set_name]

    def table(self, set_name: str = "mean", metrics: Sequence[str] = ("fpr", "auroc"),
              tasks: Sequence[str] | None = None, percent: bool = True, digits: int = 2,
              accuracy: bool = True) -> str:
        """Markdown: rows = methods; columns = per task the metrics on ``set_name``
        (default the mean over OOD sets, as the paper's Table 1); plus ID accuracy and
        end-to-end accuracy columns when available."""
        tasks = list(tasks) if tasks is not None else self.tasks
        rows = [(name, self._src(r, set_name)) for name, r in self.reports.items()]
        extra = None
        if accuracy and any("accuracy" in r.id_metrics for r in self.reports.values()):
            extra = [(r.id_metrics.get("accuracy"), r.id_metrics.get("e2e_accuracy")) for r in self.reports.values()]
        return _markdown(["Method"], tasks, metrics, rows, percent, digits, extra=extra)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self, include_scores: bool = False) -> dict:
        return {name: r.to_dict(include_scores) for name, r in self.reports.items()}

    def to_json(self, path: str | os.PathLike | None = None, include_scores: bool = False) -> str:
        text = json.dumps(self.to_dict(include_scores), indent=1, allow_nan=True)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Comparison":
        s = os.fspath(text_or_path)
        if not s.lstrip().startswith("{"):
            with open(s, encoding="utf-8") as fh:
                s = fh.read()
        return cls({k: Report.from_dict(v) for k, v in json.loads(s).items()})

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        rows = []
        for name, r in self.reports.items():
            for row in r.rows():
                row["name"] = name
                rows.append(row)
        return _write_csv(rows, ["name", "set", "task", *CSV_METRICS], path)

    def save(self, folder: str | os.PathLike) -> dict[str, str]:
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        paths = {"table": os.path.join(folder, "comparison.md"), "json": os.path.join(folder, "comparison.json"),
                 "csv": os.path.join(folder, "comparison.csv")}
        with open(paths["table"], "w", encoding="utf-8") as fh:
            fh.write("FPR = FPR at 95% TPR, ID positive; mean over OOD sets; percent.\n\n" + self.table() + "\n")
        self.to_json(paths["json"])
        self.to_csv(paths["csv"])
        return paths


def compare_table(reports: Mapping[str, Report], set_name: str = "mean",
                  metrics: Sequence[str] = ("fpr", "auroc"), **kwargs: Any) -> str:
    """``Report.combine(reports).table(set_name, metrics, ...)``."""
    return Comparison(reports).table(set_name, metrics, **kwargs)


# ---------------------------------------------------------------------- helpers
def _markdown(first: list[str], tasks: Sequence[str], metrics: Sequence[str], rows, percent: bool,
              digits: int, extra=None) -> str:
    for m in metrics:
        if m not in METRIC_TITLES:
            raise ValueError(f"`metrics` entries must be among {list(METRIC_TITLES)}, got {m!r}.")
    header = list(first) + [f"{TASK_TITLES.get(t, t)} {METRIC_TITLES[m]}" for t in tasks for m in metrics]
    if extra is not None:
        header += ["ID acc↑", "End-to-end acc↑"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]

    def fmt(v):
        if v is None or v == "":
            return "–"
        return f"{100 * v:.{digits}f}" if percent else f"{v:.{digits + 2}f}"

    for i, (label, src) in enumerate(rows):
        cells = [label] + [fmt(src.get(t, {}).get(m)) for t in tasks for m in metrics]
        if extra is not None:
            cells += [fmt(v) for v in extra[i]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(rows: list[dict], fields: list[str], path) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    text = buf.getvalue()
    if path is not None:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return text


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)
