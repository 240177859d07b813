"""Energy score (Liu et al., 2020), also the detector of AOE-trained models."""
from __future__ import annotations

import torch
import torch.nn as nn

from .._validation import check_float
from ..objectives import energy
from .base import Detector
from .registry import register_detector

__all__ = ["Energy"]


@register_detector("energy", head="any", help="energy score -T logsumexp(z/T) (Liu et al., NeurIPS 2020)")
class Energy(Detector):
    """``score(x) = -T logsumexp(z[:, :K] / T)`` (higher = more OOD);
    ``attack_loss(x) = -score(x)`` (the attacker lowers the energy).

    Args:
        model: classifier taking images in [0, 1].
        temperature: ``T > 0`` (1 in Liu et al.).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.temperature = check_float(temperature, "temperature", low=0.0, low_open=True)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return energy(self.model(x), self.temperature, self.num_classes)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"
