"""The evaluation-task registry: a task name -> how its attack is built from an
:class:`~atom_plugin.evaluation.config.EvalConfig`.

``register_task(name, build, title=..., kind="ood")``: ``build(detector, config,
threshold) -> attack or None`` (``None``: score the clean images); ``kind="ood"`` tasks
attack the OOD sets, ``kind="id"`` tasks the ID set.  ``title`` is the column title in
tables and plots.  The built-in tasks are the paper's four (``natural``, ``corruption``,
``linf``, ``compositional``) and the attacked-ID task ``in`` (ALOE).

The L∞ part of ``linf`` / ``compositional`` / ``in`` is the registered attack
``config.linf_attack``; a detector that declares ``differentiable = False`` gets the
score-only ``config.blackbox_attack`` instead (recorded in the report).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional

from ..naming import TASK_TITLES
from ..registry import Entry, Registry

__all__ = ["TASKS", "register_task", "list_tasks", "task_info", "build_attack", "linf_attack_name"]

TASKS = Registry("task")

#: ``build(detector, config: Any, threshold) -> attack or None``
Builder = Callable[..., Optional[Callable]]


def register_task(name: str, build: Builder | None = None, *, title: str | None = None, kind: str = "ood",
                  help: str | None = None):
    """Register an evaluation task (usable as a decorator on ``build``)."""
    if kind not in ("ood", "id"):
        raise ValueError(f"`kind` must be 'ood' or 'id', got {kind!r}.")

    def deco(fn: Builder) -> Builder:
        TASKS.register(name, fn, help=help, kind=kind, title=title or name)
        TASK_TITLES.setdefault(name, title or name)
        return fn

    return deco(build) if build is not None else deco


def list_tasks(kind: str | None = "ood") -> List[str]:
    """Registered task names (``kind=None``: all)."""
    return [n for n in TASKS.names() if kind is None or TASKS.get(n).kind == kind]


def task_info(name: str) -> Entry:
    return TASKS.get(name)


def build_attack(task: str, detector: Any, config: Any, threshold: float | None = None):
    """The attack of ``task`` for ``detector`` under ``config`` (``None`` for clean images)."""
    return TASKS.get(task).builder(detector, config, threshold)


# ------------------------------------------------------------------ construction helpers
def linf_attack_name(detector: Any, config: Any) -> str:
    """``config.linf_attack``, or the black-box attack for a non-differentiable detector."""
    from ..attacks import ATTACKS

    if getattr(detector, "differentiable", True) or not ATTACKS.get(config.linf_attack).gradient:
        return config.linf_attack
    if config.blackbox_attack not in ATTACKS:
        raise ValueError(f"{type(detector).__name__} has no input gradient (differentiable=False) and no score-only "
                         "attack is registered; evaluate it without the 'linf'/'compositional' tasks.")
    return config.blackbox_attack


def _accepted(cls: type) -> set:
    return set(inspect.signature(cls.__init__).parameters)


def _linf(detector: Any, config: Any, threshold: float | None, target: str = "ood"):
    """The configured L∞ attack; settings the attack class does not take are not passed
    (e.g. ``alpha`` for Square)."""
    from ..attacks import ATTACKS

    cls = ATTACKS.get(linf_attack_name(detector, config)).builder
    ok = _accepted(cls)
    # seeded attacks draw per image; evaluate re-seeds them per (set, task, batch) (scoring.reseed)
    if "version" in ok:  # a parameter-free ensemble (OOD AutoAttack): only its version sets the budget
        kw = dict(eps=config.eps, version=config.attack_version, seed=config.seed, target=target)
    else:
        kw = dict(eps=config.eps, alpha=config.alpha, steps=config.steps, restarts=config.restarts,
                  random_start=True, seed=config.seed, target=target, n_queries=config.queries)
    if config.early_stop and target == "ood":
        kw.update(threshold=threshold, early_stop=True)
    elif "version" in ok and target == "ood":  # the ensemble attacks only images not yet accepted
        kw["threshold"] = threshold
    # otherwise no threshold: a thresholded attack prefers an accepted point over the lowest
    # score, so AUROC/AUPR under attack would no longer be worst-case
    return cls(detector, **{k: v for k, v in kw.items() if k in ok})


def _corruption(detector: Any, config: Any, threshold: float | None = None):
    from ..attacks import CorruptionAttack

    kw: dict = {"seed": None, "progress": config.corruption_progress}
    if config.corruptions is not None:
        kw["corruptions"] = list(config.corruptions)
    if config.severities is not None:
        kw["severities"] = list(config.severities)
    if config.corruption_backend is not None:
        kw["backend"] = config.corruption_backend
    if config.corruption_batch_size is not None:
        kw["batch_size"] = config.corruption_batch_size
    if "table" in _accepted(CorruptionAttack):
        kw["table"] = config.corruption_table
    elif config.corruption_table != "auto":
        raise ValueError("`corruption_table` is not supported by this CorruptionAttack.")
    return CorruptionAttack(detector, **kw)


# ------------------------------------------------------------------ the built-in tasks
@register_task("natural", title="Natural", help="clean OOD images")
def _natural(detector, config, threshold=None):
    return None


@register_task("corruption", title="Corruption",
               help="black-box corruption attack: lowest OOD score over types x severities")
def _corruption_task(detector, config, threshold=None):
    return _corruption(detector, config, threshold)


@register_task("linf", title="L∞", help="white-box L-inf attack (config.linf_attack)")
def _linf_task(detector, config, threshold=None):
    return _linf(detector, config, threshold)


@register_task("compositional", title="Comp.", help="corruption, then the L-inf attack around it")
def _compositional_task(detector, config, threshold=None):
    from ..attacks import CompositionalAttack

    linf = _linf(detector, config, threshold)
    return CompositionalAttack(detector, corruption_attack=_corruption(detector, config, threshold),
                               linf_attack=linf, eps=config.eps, alpha=config.alpha, steps=config.steps,
                               seed=None)


@register_task("in", kind="id", title="In (attacked ID)", help="ID images pushed to look OOD (ALOE)")
def _in_task(detector, config, threshold=None):
    return _linf(detector, config, threshold, target="in")
