"""ReAct (Sun et al., "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from .._validation import check_float
from ._fitting import PenultimateDetector
from .registry import register_detector

__all__ = ["ReAct"]


@register_detector("react", head="any", help="energy of clipped penultimate activations (Sun et al., NeurIPS 2021)")
class ReAct(PenultimateDetector):
    """Rectified activations, Sun et al., *ReAct: Out-of-distribution Detection With
    Rectified Activations*, NeurIPS 2021.

    Fit: the threshold ``c`` = the ``percentile`` quantile of all penultimate activations
    of the fit data (``numpy.percentile``, as pytorch-ood); or pass ``threshold``.

    Score (pytorch-ood ``ReAct`` with the default energy detector, the penultimate
    features as ``backbone`` and the classifier as ``head``):
    ``score(x) = -logsumexp(W min(z, c) + b)`` (higher = more OOD).

    Attack objective: ``attack_loss(x) = -score(x)``, the energy of the clipped features:
    the gradient flows through every activation below ``c`` (the clip is the identity
    there), so the attacker raises the energy with the unclipped units.

    Args:
        model: classifier taking images in [0, 1].
        percentile: quantile in (0, 1) for the threshold (0.9 in the paper).
        threshold: a fixed clip value (then no fit is needed).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    requires_fit = True

    def __init__(self, model: nn.Module, percentile: float = 0.9, threshold: float | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.percentile = check_float(percentile, "percentile", low=0.0, high=1.0)
        self.threshold = None if threshold is None else check_float(threshold, "threshold")
        self.fitted = threshold is not None

    def fit(self, loader: Iterable, *, max_samples: int | None = None, progress: bool = False) -> "ReAct":
        """Threshold from the activations of ``loader`` (kept on the CPU, float32)."""
        acts = [z.detach().flatten().float().cpu() for _, z, _ in
                self._fit_batches(loader, max_samples=max_samples, show_progress=progress)]
        self.threshold = float(np.percentile(torch.cat(acts).numpy(), self.percentile * 100))
        self.fitted = True
        return self

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        _, z = self._features(x)
        return -torch.logsumexp(self._head(z.clip(max=self.threshold)), dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, percentile={self.percentile}, threshold={self.threshold}"
