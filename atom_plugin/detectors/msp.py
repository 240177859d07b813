"""Maximum softmax probability (Hendrycks & Gimpel, 2017)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..objectives import uniform_ce
from .base import Detector
from .registry import register_detector

__all__ = ["MSP"]


@register_detector("msp", head="any", help="maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)")
class MSP(Detector):
    """``score(x) = -max_i softmax(z[:, :K])_i`` (in [-1, -1/K]; higher = more OOD).

    ``attack_loss(x) = uniform_ce(z, K)`` (paper eq. 115), the objective that also
    attacks OE / ACET / CCU models.  Reject columns of a K+R model are ignored.

    Args:
        model: classifier taking images in [0, 1].
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)[:, : self.num_classes]
        return -torch.softmax(z, dim=1).amax(dim=1)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        return uniform_ce(self.model(x), self.num_classes)
