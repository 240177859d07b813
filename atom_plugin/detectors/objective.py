"""A detector defined by a model and an attack objective on its logits, and
:func:`as_detector`, which turns what a user passes to an attack into a detector."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..models import head_spec
from ..objectives import takes_num_classes, get_objective
from .base import Detector
from .registry import register_detector

__all__ = ["ObjectiveDetector", "as_detector"]


class ObjectiveDetector(Detector):
    """``attack_loss(x) = objective(model(x))`` and ``score(x) = -attack_loss(x)``.

    Args:
        model: classifier taking images in [0, 1].
        objective: a callable ``logits (B, C) -> (B,)`` that an attacker maximizes (e.g.
            :func:`atom_plugin.objectives.uniform_ce`), or a name from
            :data:`atom_plugin.objectives.OBJECTIVES`.  If it has a ``num_classes``
            parameter it is called as ``objective(logits, num_classes=K)``.
            ``objectives.energy`` (a score) is refused; use ``neg_energy``.
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, objective: Callable | str, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.objective = get_objective(objective)
        self._pass_k = takes_num_classes(self.objective)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        out = self.objective(logits, num_classes=self.num_classes) if self._pass_k else self.objective(logits)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"`objective` must return one value per image, shape ({x.shape[0]},), got {shape}; "
                "do not reduce over the batch."
            )
        return out

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -self._attack_loss(x)

    def extra_repr(self) -> str:
        name = getattr(self.objective, "__name__", type(self.objective).__name__)
        return f"{super().extra_repr()}, objective={name}"


def as_detector(
    model_or_detector: nn.Module,
    objective: Callable | str | None = None,
    num_classes: int | None = None,
) -> Detector:
    """The :class:`Detector` for what a user hands to an attack or the evaluation.

    * a :class:`Detector` -> itself (``objective`` / ``num_classes`` must be ``None``);
    * an ``nn.Module`` and an ``objective`` -> :class:`ObjectiveDetector`;
    * an ``nn.Module`` alone -> by its head, ``(K, R) = head_spec(model, num_classes)``:
      ``R == 0`` -> :class:`MSP`, ``R == 1`` -> :class:`RejectClass` (ATOM / NTOM),
      ``R > 1`` -> :class:`RejectSum` (SOFL).
    """
    if isinstance(model_or_detector, Detector):
        if objective is not None or num_classes is not None:
            raise ValueError(
                f"`model` is already a detector ({type(model_or_detector).__name__}); it defines its own "
                "attack objective, so do not also pass `objective` or `num_classes`."
            )
        return model_or_detector
    if not isinstance(model_or_detector, nn.Module):
        raise TypeError(
            f"`model` must be a Detector or an nn.Module classifier, got {type(model_or_detector).__name__}; "
            "wrap a plain score function with atom_plugin.detectors.ScoreDetector(fn)."
        )
    if objective is not None:
        return ObjectiveDetector(model_or_detector, objective, num_classes)
    from .msp import MSP
    from .reject import RejectClass, RejectSum

    _, r = head_spec(model_or_detector, num_classes)
    if r == 0:
        return MSP(model_or_detector, num_classes)
    if r == 1:
        return RejectClass(model_or_detector, num_classes)
    return RejectSum(model_or_detector, num_classes)


@register_detector("auto", head="any",
                   help="by the model's head: K-way -> msp, K+1 -> reject, K+R -> sofl")
def _auto(model: nn.Module, num_classes: int | None = None) -> Detector:
    return as_detector(model, num_classes=num_classes)
