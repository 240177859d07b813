"""Relative Mahalanobis distance (Ren et al., "A Simple Fix to Mahalanobis Distance for
Improving Near-OOD Detection", 2021)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._fitting import PenultimateDetector
from .registry import register_detector

__all__ = ["RMD"]


@register_detector("rmd", head="any", help="relative Mahalanobis distance (Ren et al., 2021)")
class RMD(PenultimateDetector):
    """Relative Mahalanobis distance, Ren et al., *A Simple Fix to Mahalanobis Distance
    for Improving Near-OOD Detection*, arXiv 2106.09022, 2021.

    Fit on the penultimate features ``z`` of labelled ID data (labels ``< 0`` ignored;
    unlabelled batches use the classifier's predictions): class means ``mu_k``, the tied
    scatter ``S = sum_k sum_{y=k} (z - mu_k)(z - mu_k)^T + 1e-6 I``, the background mean
    ``mu_0`` and scatter ``S_0 = sum (z - mu_0)(z - mu_0)^T + 1e-6 I`` (unnormalized
    scatter matrices and ridge exactly as pytorch-ood; statistics accumulated in float64).

    Score (pytorch-ood ``RMD``): ``score(x) = min_k [MD_k(z) - MD_0(z)]`` with
    ``MD_k(z) = (z - mu_k)^T S^-1 (z - mu_k)`` and ``MD_0`` the same with ``mu_0, S_0``
    (higher = more OOD).

    Attack objective: ``attack_loss(x) = -score(x)``: the negative minimum relative
    distance, linear in the squared distances, so it never saturates (unlike a logistic on
    top of distances); the gradient goes to the closest class.

    Args:
        model: classifier taking images in [0, 1].
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).

    After :meth:`fit`: buffers ``means`` ``(K, D)``, ``precision`` ``(D, D)``,
    ``background_mean`` ``(D,)``, ``background_precision`` ``(D, D)``.
    """

    requires_fit = True

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        for name in ("means", "precision", "background_mean", "background_precision"):
            self.register_buffer(name, torch.empty(0))

    def fit(self, loader: Iterable, *, max_samples: int | None = None, progress: bool = False) -> "RMD":
        """Class and background Gaussians from ``loader``."""
        k = self.num_classes
        sums = counts = outer = None
        for logits, z, y in self._fit_batches(loader, max_samples=max_samples, show_progress=progress):
            z = z.double()
            y = logits.argmax(dim=1) if y is None else y
            if bool((y >= k).any()):
                raise ValueError(f"`loader` labels must be in [0, {k}) (or < 0 for OOD samples), got max {int(y.max())}.")
            if sums is None:
                d = z.shape[1]
                sums = torch.zeros(k, d, dtype=torch.float64, device=z.device)
                counts = torch.zeros(k, dtype=torch.float64, device=z.device)
                outer = torch.zeros(d, d, dtype=torch.float64, device=z.device)
            onehot = F.one_hot(y, k).double()
            sums += onehot.T @ z
            counts += onehot.sum(0)
            outer += z.T @ z
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"`loader` has no images of classes {missing[:10]}; the class means need every class.")
        n = counts.sum()
        means = sums / counts[:, None]
        mu0 = sums.sum(0) / n
        eye = torch.eye(outer.shape[0], dtype=torch.float64, device=outer.device) * 1e-6
        scatter = outer - (means.T * counts) @ means + eye
        scatter0 = outer - n * torch.outer(mu0, mu0) + eye
        self.means, self.background_mean = means.float(), mu0.float()
        self.precision = torch.linalg.inv(scatter).float()
        self.background_precision = torch.linalg.inv(scatter0).float()
        self.fitted = True
        return self

    def relative_distances(self, z: torch.Tensor) -> torch.Tensor:
        """``MD_k(z) - MD_0(z)`` ``(B, K)`` of features ``z`` ``(B, D)``."""
        md = []
        for s in range(0, self.means.shape[0], 32):  # (B, 32, D) blocks: memory-bounded for large K
            c = z[:, None, :] - self.means[None, s: s + 32]
            md.append(((c @ self.precision) * c).sum(dim=2))
        md = torch.cat(md, dim=1)
        c0 = z - self.background_mean
        md0 = ((c0 @ self.background_precision) * c0).sum(dim=1)
        return md - md0[:, None]

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self.relative_distances(self._features(x)[1]).amin(dim=1)
