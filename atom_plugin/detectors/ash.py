"""ASH (Djurisic et al., "Extremely Simple Activation Shaping for Out-of-Distribution
Detection", ICLR 2023)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .._validation import check_choice, check_float
from ._fitting import PenultimateDetector
from .registry import register_detector

__all__ = ["ASH", "ash"]


def ash(z: torch.Tensor, percentile: float = 0.65, variant: str = "ash-s") -> torch.Tensor:
    """Activation shaping of features ``z`` ``(B, D)``: keep the ``k = D - round(D p)``
    largest activations of each row and zero the rest; ``ash-p`` keeps them, ``ash-b``
    replaces each by ``sum(z) / k``, ``ash-s`` scales them by ``exp(sum(z) / sum(kept))``."""
    n = z.shape[1]
    k = n - round(n * percentile)  # round half to even, as np.round
    v, i = torch.topk(z, k, dim=1)
    if variant == "ash-b":
        v = (z.sum(dim=1) / k).unsqueeze(1).expand(v.shape)
    pruned = torch.zeros_like(z).scatter(1, i, v)
    if variant == "ash-s":
        return pruned * torch.exp(z.sum(dim=1) / pruned.sum(dim=1)).unsqueeze(1)
    return pruned


@register_detector("ash", head="any", help="activation shaping then energy (Djurisic et al., ICLR 2023)")
class ASH(PenultimateDetector):
    """Activation shaping, Djurisic et al., *Extremely Simple Activation Shaping for
    Out-of-Distribution Detection*, ICLR 2023.  No fit.

    Score (pytorch-ood ``ASH`` with the penultimate features ``(B, D, 1, 1)`` as
    ``backbone`` output and the classifier as ``head``): ``score(x) = -logsumexp(W
    ash(z) + b)`` with :func:`ash` (higher = more OOD).

    Attack objective: ``attack_loss(x) = -score(x)``; the top-``k`` mask is piecewise
    constant, so the gradient flows through the kept activations (and, for ``ash-s`` /
    ``ash-b``, through the row sum of all of them).

    Args:
        model: classifier taking images in [0, 1].
        variant: ``"ash-s"`` (default), ``"ash-p"`` or ``"ash-b"``.
        percentile: fraction of activations pruned, in [0, 1) (0.65 default as pytorch-ood;
            the paper uses 0.9 on ImageNet).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, variant: str = "ash-s", percentile: float = 0.65,
                 num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.variant = check_choice(variant, "variant", ("ash-s", "ash-p", "ash-b"))
        self.percentile = check_float(percentile, "percentile", low=0.0, high=1.0)
        if self.weight.shape[1] - round(self.weight.shape[1] * self.percentile) < 1:
            raise ValueError(f"`percentile`={percentile} prunes every one of the {self.weight.shape[1]} features; "
                             "lower it.")

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        _, z = self._features(x)
        return -torch.logsumexp(self._head(ash(z, self.percentile, self.variant)), dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant}, percentile={self.percentile}"
