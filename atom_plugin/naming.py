"""Display names shared by the report tables and the plots (one place, no import circle).

``TASK_TITLES`` is extended by :func:`atom_plugin.evaluation.register_task`."""
from __future__ import annotations

__all__ = ["TASK_TITLES", "METRIC_TITLES", "task_order"]

#: column-group titles of the tasks, in table order
TASK_TITLES = {
    "natural": "Natural", "corruption": "Corruption", "linf": "L∞", "compositional": "Comp.",
    "in": "In (attacked ID)", "in_out": "In & Out",
}
#: metric titles; arrows say which direction is better
METRIC_TITLES = {
    "fpr": "FPR↓", "auroc": "AUROC↑", "aupr_in": "AUPR-in↑", "aupr_out": "AUPR-out↑",
    "detection_error": "DetErr↓", "fpr95_ood_positive": "FPR95(OOD+)↓",
    "fpr_at_threshold": "FPR@t↓", "tpr_at_threshold": "TPR@t↑",
}


def task_order(tasks) -> list[str]:
    """``tasks`` in table order: the titled ones first, in ``TASK_TITLES`` order, then the rest sorted."""
    known = [t for t in TASK_TITLES if t in tasks]
    return known + sorted(t for t in tasks if t not in TASK_TITLES)
