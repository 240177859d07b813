"""MaxLogit (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
Settings", ICML 2022)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Detector
from .registry import register_detector

__all__ = ["MaxLogit"]


@register_detector("maxlogit", head="any", help="negative maximum logit (Hendrycks et al., ICML 2022)")
class MaxLogit(Detector):
    """MaxLogit, Hendrycks et al., *Scaling Out-of-Distribution Detection for Real-World
    Settings*, ICML 2022.

    Score (pytorch-ood ``MaxLogit``): ``score(x) = -max_i z_i(x)`` over the ``K`` ID logits
    (higher = more OOD).

    Attack objective: ``attack_loss(x) = max_i z_i(x) = -score(x)``: the attacker raises
    the largest logit, exactly what the detector thresholds (never saturates: the
    gradient is the gradient of one logit).

    Args:
        model: classifier taking images in [0, 1].
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -self.model(x)[:, : self.num_classes].amax(dim=1)
