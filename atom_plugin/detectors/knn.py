"""Deep nearest neighbours (Sun et al., "Out-of-Distribution Detection with Deep Nearest
Neighbors", ICML 2022)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validation import check_int
from ._fitting import PenultimateDetector
from .registry import register_detector

__all__ = ["KNN"]


@register_detector("knn", head="any", help="distance to the k-th nearest ID feature (Sun et al., ICML 2022)")
class KNN(PenultimateDetector):
    """Deep nearest neighbours, Sun et al., *Out-of-Distribution Detection with Deep
    Nearest Neighbors*, ICML 2022.

    Fit: the bank ``{u(x')}`` of L2-normalized penultimate features ``u = z / |z|`` of the
    fit data (samples with labels ``< 0`` ignored), on the model's device.

    Score (pytorch-ood ``KNN``, exact search): ``score(x) = |u(x) - u_(k)|_2``, the
    Euclidean distance to the ``k``-th nearest bank feature (higher = more OOD).

    Attack objective: ``attack_loss(x) = -score(x)``, differentiable: the distances are
    computed in torch (chunks of ``chunk`` bank rows, no matrix-product shortcut, so no
    cancellation) and the ``k`` smallest are kept with ``topk``, which passes the gradient
    to the current ``k``-th neighbour; the attacker pulls the feature into the bank.

    Args:
        model: classifier taking images in [0, 1].
        k: neighbour rank (50 in the paper for CIFAR-10).
        normalize: L2-normalize the features (True in the paper).
        chunk: bank rows per distance block (memory ``B * chunk``).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    requires_fit = True

    def __init__(self, model: nn.Module, k: int = 50, normalize: bool = True, chunk: int = 8192,
                 num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.k = check_int(k, "k", low=1)
        self.normalize = bool(normalize)
        self.chunk = check_int(chunk, "chunk", low=1)
        self.register_buffer("bank", torch.empty(0))

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1, eps=1e-12) if self.normalize else z

    def fit(self, loader: Iterable, *, max_samples: int | None = None, progress: bool = False) -> "KNN":
        """Build the feature bank from ``loader`` (batches ``(x, y)`` or ``x`` in [0, 1])."""
        bank = [self._prepare(z).float() for _, z, _ in self._fit_batches(loader, max_samples=max_samples,
                                                                          show_progress=progress)]
        bank = torch.cat(bank)
        if bank.shape[0] < self.k:
            raise ValueError(f"`k`={self.k} exceeds the number of ID fit samples ({bank.shape[0]}); "
                             "lower k or fit on more data.")
        self.bank = bank
        self.fitted = True
        return self

    def kth_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Distance ``(B,)`` of features ``z`` ``(B, D)`` to their ``k``-th nearest bank row."""
        u = self._prepare(z)
        best = None
        for s in range(0, self.bank.shape[0], self.chunk):
            d = torch.cdist(u, self.bank[s: s + self.chunk], compute_mode="donot_use_mm_for_euclid_dist")
            d = d if best is None else torch.cat([best, d], dim=1)
            best = d.topk(min(self.k, d.shape[1]), dim=1, largest=False).values
        return best[:, self.k - 1]

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return self.kth_distance(self._features(x)[1])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}, normalize={self.normalize}"
