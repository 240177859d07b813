"""Adapt any differentiable score function (e.g. a pytorch-ood detector) to the contract."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..models import head_spec
from .base import Detector
from ._checked import CheckedDetector

__all__ = ["ScoreDetector"]


class ScoreDetector(CheckedDetector):
    """Wrap ``score_fn: images (B, C, H, W) in [0, 1] -> (B,)`` (higher = more OOD).

    Args:
        score_fn: a differentiable callable.  For a pytorch-ood detector pass its
            ``predict`` (pytorch-ood detectors return *outlier* scores, higher = more OOD,
            which is our convention, so no sign flip), or, for logit-based pytorch-ood
            detectors, ``lambda x: det.predict_logits(model(x))``.  It must not run under
            ``torch.no_grad`` or attacks get no gradient (the attacks then refuse it with a
            clear error).  If it is an ``nn.Module`` it is
            registered as a submodule (so ``.eval()`` / ``.to()`` reach it).
        model: the classifier, optional; needed only for :meth:`classify`.
        num_classes: ``K`` for :meth:`classify` (default from ``head_spec(model)``).
        attack_loss_fn: ``images -> (B,)`` the attacker maximizes; default ``-score_fn``.
    """

    def __init__(
        self,
        score_fn: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module | None = None,
        num_classes: int | None = None,
        attack_loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not callable(score_fn):
            raise TypeError(f"`score_fn` must be a callable images -> (B,), got {type(score_fn).__name__}.")
        if attack_loss_fn is not None and not callable(attack_loss_fn):
            raise TypeError(f"`attack_loss_fn` must be a callable images -> (B,), got {type(attack_loss_fn).__name__}.")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module or None, got {type(model).__name__}.")
        k, r = head_spec(model, num_classes) if model is not None else (num_classes, 0)
        Detector.__init__(self, model, k)
        self.num_reject = r
        self.score_fn = score_fn  # an nn.Module score_fn becomes a submodule
        self.attack_loss_fn = attack_loss_fn

    @staticmethod
    def _check_out(out, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"`{name}` must return one score per image, shape ({x.shape[0]},), got {shape}.")
        return out

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self._check_out(self.score_fn(x), x, "score_fn")

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.attack_loss_fn is None:
            return -self._score(x)
        return self._check_out(self.attack_loss_fn(x), x, "attack_loss_fn")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise NotImplementedError("ScoreDetector has no classifier; pass `model` to use classify().")
        return super().classify(x)
