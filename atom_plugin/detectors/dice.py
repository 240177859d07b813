"""DICE (Sun & Li, "DICE: Leveraging Sparsification for Out-of-Distribution Detection",
ECCV 2022)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from .._validation import check_float
from ._fitting import PenultimateDetector
from .registry import register_detector

__all__ = ["DICE"]


@register_detector("dice", head="any", help="energy with a sparsified classifier (Sun & Li, ECCV 2022)")
class DICE(PenultimateDetector):
    """Directed sparsification, Sun & Li, *DICE: Leveraging Sparsification for
    Out-of-Distribution Detection*, ECCV 2022.

    Fit: the mean penultimate feature ``m`` of the fit data, contributions
    ``V_ij = m_j W_ij``, the threshold ``t`` = their ``p``-quantile
    (``torch.quantile``), the mask ``M = V > t``.

    Score (pytorch-ood ``DICE`` with the default energy detector):
    ``score(x) = -logsumexp((M * W) z + b)`` (higher = more OOD).

    Attack objective: ``attack_loss(x) = -score(x)``, the energy under the sparsified
    weights (the mask is a constant of the fit, so the gradient is exact).

    Args:
        model: classifier taking images in [0, 1].
        p: sparsity, the fraction of weights dropped, in [0, 1) (0.9 in the paper).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).

    After :meth:`fit`: buffers ``mean_activation`` ``(D,)`` and ``masked_weight`` ``(K, D)``.
    """

    requires_fit = True

    def __init__(self, model: nn.Module, p: float = 0.9, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.p = check_float(p, "p", low=0.0, high=1.0)
        self.register_buffer("mean_activation", torch.empty(0))
        self.register_buffer("masked_weight", torch.empty(0))

    def fit(self, loader: Iterable, *, max_samples: int | None = None, progress: bool = False) -> "DICE":
        """Mean activation and weight mask from ``loader``."""
        w = self.weight.detach().float()
        total, n = torch.zeros(w.shape[1], dtype=torch.float64, device=w.device), 0
        for _, z, _ in self._fit_batches(loader, max_samples=max_samples, show_progress=progress):
            total += z.double().sum(dim=0)
            n += z.shape[0]
        mean = (total / n).float()
        contrib = mean[None, :] * w
        threshold = torch.quantile(contrib.flatten(), torch.tensor(self.p, device=w.device))
        self.mean_activation = mean
        self.masked_weight = torch.where(contrib > threshold, w, torch.zeros_like(w))
        self.fitted = True
        return self

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        _, z = self._features(x)
        return -torch.logsumexp(z @ self.masked_weight.T + self.bias, dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
