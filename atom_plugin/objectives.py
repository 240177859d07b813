"""Attack objectives and logit scores for OOD detection (ATOM paper, Appendix B.4).

Every function is pure and differentiable and returns one value per sample, shape ``(B,)``.
Logits are ``(B, K + R)``: ``K`` in-distribution classes followed by ``R`` reject classes.

Sign convention
---------------
``uniform_ce``, ``reject_nll``, ``reject_sum_nll`` and ``mahalanobis_logistic`` are
*attack objectives*: an attacker **maximizes** them to make an OOD input look
in-distribution (paper eq. 115-118); an "in" attack (ALOE) minimizes them.
``energy`` is a *score* (higher = more OOD); its attack objective is ``-energy``
(:func:`neg_energy`).

All functions are written with ``log_softmax`` / ``logsumexp`` / ``softplus`` so they stay
finite, with finite gradients, for logits as large as ``+-1e4`` in float32.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F

from ._validation import check_float, check_int, check_logits

__all__ = [
    "uniform_ce",
    "reject_nll",
    "reject_sum_nll",
    "energy",
    "neg_energy",
    "mahalanobis_logistic",
    "OBJECTIVES",
    "get_objective",
    "call_objective",
    "takes_num_classes",
]


def _in_logits(logits: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """The first ``num_classes`` columns (all columns if ``None``)."""
    if num_classes is None:
        return logits
    check_int(num_classes, "num_classes", low=1)
    if num_classes > logits.shape[1]:
        raise ValueError(
            f"`num_classes`={num_classes} exceeds the {logits.shape[1]} columns of `logits`."
        )
    return logits[:, :num_classes]


def uniform_ce(logits: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Cross-entropy to the uniform distribution, ``-(1/K) sum_i log softmax(z)_i``.

    Args:
        logits: ``(B, C)``.
        num_classes: ``K``; if given, only the first ``K`` columns are used and the softmax
            is taken over those ``K`` (reject columns ignored).  Default: all columns.

    Returns:
        ``(B,)``, ``>= log K``, equal to ``log K`` for a uniform prediction.  The attack
        objective of MSP / ODIN / OE / ACET / CCU (paper eq. 115): maximizing it makes the
        prediction confident, i.e. the input looks in-distribution.
    """
    check_logits(logits)
    z = _in_logits(logits, num_classes)
    return -F.log_softmax(z, dim=1).mean(dim=1)


def _check_reject(logits: torch.Tensor, num_classes: int, *, exact_one: bool, what: str) -> None:
    check_logits(logits)
    check_int(num_classes, "num_classes", low=1)
    c = logits.shape[1]
    if exact_one and c != num_classes + 1:
        raise ValueError(
            f"{what} needs a (K+1)-way model: `logits` has {c} columns but `num_classes`={num_classes} "
            f"needs {num_classes + 1}. A {c}-way model was given to a K+1 objective; give the model a reject "
            f"class with atom_plugin.models.with_reject_head(model, {num_classes}) and train it, "
            "or use uniform_ce / the MSP detector for a plain K-way classifier."
        )
    if not exact_one and c <= num_classes:
        raise ValueError(
            f"{what} needs at least one reject class: `logits` has {c} columns and `num_classes`={num_classes}, "
            f"so R = {c - num_classes}. Use atom_plugin.models.with_reject_head(model, {num_classes}, "
            "num_reject=R) to add R >= 1 reject classes."
        )


def reject_nll(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``-log softmax(z)_{K+1}``: negative log-probability of the reject class.

    Args:
        logits: ``(B, K + 1)`` of a (K+1)-way model (ATOM / NTOM / ROWL).
        num_classes: ``K``.

    Returns:
        ``(B,)``, ``>= 0``.  Attack objective of K+1 models (paper eq. 118): maximizing it
        lowers the reject probability.  Raises ``ValueError`` if ``logits`` does not have
        exactly ``K + 1`` columns.
    """
    _check_reject(logits, num_classes, exact_one=True, what="reject_nll")
    return -F.log_softmax(logits, dim=1)[:, num_classes]


def reject_sum_nll(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``-log sum_{i=K+1}^{K+R} softmax(z)_i``, computed as
    ``logsumexp(z) - logsumexp(z[:, K:])`` (never the log of a softmax sum).

    Args:
        logits: ``(B, K + R)`` with ``R >= 1`` reject classes (SOFL).
        num_classes: ``K``.

    Returns:
        ``(B,)``, ``>= 0``.  Attack objective of SOFL (paper eq. 117).
    """
    _check_reject(logits, num_classes, exact_one=False, what="reject_sum_nll")
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, num_classes:], dim=1)


def energy(logits: torch.Tensor, temperature: float = 1.0, num_classes: int | None = None) -> torch.Tensor:
    """Free energy ``-T logsumexp(z / T)``, an OOD **score** (higher = more OOD).

    Args:
        logits: ``(B, C)``.
        temperature: ``T > 0``.
        num_classes: use only the first ``K`` columns (default: all).

    Returns:
        ``(B,)``.  This is not an attack objective; the attacker maximizes
        :func:`neg_energy` ``= -energy`` (AOE / energy-based detection).
    """
    check_logits(logits)
    t = check_float(temperature, "temperature", low=0.0, low_open=True)
    z = _in_logits(logits, num_classes)
    return -t * torch.logsumexp(z / t, dim=1)


def neg_energy(logits: torch.Tensor, temperature: float = 1.0, num_classes: int | None = None) -> torch.Tensor:
    """``T logsumexp(z / T)``: the attack objective for the energy score (maximize)."""
    return -energy(logits, temperature, num_classes)


def mahalanobis_logistic(layer_scores: torch.Tensor, coef, intercept) -> torch.Tensor:
    """``log(1 + exp(-(sum_l a_l M_l + b)))`` written as ``softplus(-(M @ a + b))``.

    Args:
        layer_scores: ``(B, L)`` Mahalanobis confidence scores ``M_l`` (one per layer).
        coef: ``(L,)`` logistic-regression weights ``a_l`` (tensor or array-like).
        intercept: the bias ``b`` (number or 0-d / 1-element tensor).

    The logistic regression is trained with OOD as the positive class (label 1, as in
    Lee et al.'s code), so ``d = M @ a + b`` is the OOD logit, ``sigmoid(d) = P(OOD)``
    and this function equals ``-log P(OOD)``.  Maximizing it (paper eq. 116) makes the
    input look in-distribution.  Returns ``(B,)``, ``>= 0``.
    """
    if not isinstance(layer_scores, torch.Tensor):
        raise TypeError(f"`layer_scores` must be a torch.Tensor of shape (B, L), got {type(layer_scores).__name__}.")
    check_logits(layer_scores, "layer_scores")
    a = torch.as_tensor(coef, dtype=layer_scores.dtype, device=layer_scores.device).reshape(-1)
    if a.numel() != layer_scores.shape[1]:
        raise ValueError(
            f"`coef` must have one weight per layer ({layer_scores.shape[1]}), got {a.numel()}."
        )
    b = torch.as_tensor(intercept, dtype=layer_scores.dtype, device=layer_scores.device)
    if b.numel() != 1:
        raise ValueError(f"`intercept` must be a single number, got {b.numel()} values.")
    return F.softplus(-(layer_scores @ a + b.reshape(())))


#: Attack objectives by name (all maximized by an attacker of an OOD input).
OBJECTIVES: dict[str, Callable[..., torch.Tensor]] = {
    "uniform_ce": uniform_ce,
    "reject_nll": reject_nll,
    "reject_sum_nll": reject_sum_nll,
    "neg_energy": neg_energy,
}


def get_objective(objective) -> Callable[..., torch.Tensor]:
    """An attack objective from a name in :data:`OBJECTIVES` or a callable.

    Refuses :func:`energy` (a score, higher = more OOD): its objective is :func:`neg_energy`.
    """
    if isinstance(objective, str):
        if objective == "energy":
            return neg_energy
        if objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {sorted(OBJECTIVES)} or a callable, got {objective!r}.")
        return OBJECTIVES[objective]
    if objective is energy:
        raise ValueError(
            "`objective`=objectives.energy is an OOD score (higher = more OOD), not an attack objective; "
            "pass objectives.neg_energy (or 'neg_energy'), or use detectors.Energy(model)."
        )
    if not callable(objective):
        raise TypeError(f"`objective` must be a callable logits -> (B,) or a name, got {type(objective).__name__}.")
    return objective


def takes_num_classes(fn: Callable) -> bool:
    """True if ``fn`` has a ``num_classes`` parameter (objectives are then called with K)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call_objective(objective: Callable, logits: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """``objective(logits, num_classes=K)`` if it has a ``num_classes`` parameter, else
    ``objective(logits)``; checks the result is ``(B,)``."""
    if num_classes is not None and takes_num_classes(objective):
        out = objective(logits, num_classes=num_classes)
    else:
        out = objective(logits)
    if not isinstance(out, torch.Tensor) or out.shape != (logits.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"`objective` must return one value per sample, shape ({logits.shape[0]},), got {shape}; "
            "do not reduce over the batch (no .mean())."
        )
    return out
