"""Entropy of the softmax (Chan et al., "Entropy Maximization and Meta Classification for
Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Detector
from .registry import register_detector

__all__ = ["Entropy"]


@register_detector("entropy", head="any", help="softmax entropy (Chan et al., ICCV 2021)")
class Entropy(Detector):
    """Softmax entropy, Chan et al., *Entropy Maximization and Meta Classification for
    Out-of-Distribution Detection in Semantic Segmentation*, ICCV 2021.

    Score (pytorch-ood ``Entropy``): ``score(x) = -sum_i p_i log p_i`` with
    ``p = clip(softmax(z[:, :K]), 1e-7, 1)`` (higher = more OOD).

    Attack objective: ``attack_loss(x) = sum_i p_i log p_i`` computed as
    ``sum softmax(z) * log_softmax(z)`` (no clipping, so classes with ``p < 1e-7`` still
    pass a gradient): the negative entropy, which the attacker maximizes to make the
    posterior peaky.

    Args:
        model: classifier taking images in [0, 1].
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.model(x)[:, : self.num_classes], dim=1).clip(1e-7, 1)
        return -(p * p.log()).sum(dim=1)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.model(x)[:, : self.num_classes], dim=1)
        return (logp.exp() * logp).sum(dim=1)
