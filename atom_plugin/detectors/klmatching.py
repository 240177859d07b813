"""KL matching (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
Settings", ICML 2022)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from .._utils import eval_mode, module_device
from ._fitting import size_error, iter_fit_batches
from .base import Detector
from .registry import register_detector

__all__ = ["KLMatching"]


@register_detector("klmatching", head="any", help="KL divergence to typical posteriors (Hendrycks et al., ICML 2022)")
class KLMatching(Detector):
    """KL matching, Hendrycks et al., *Scaling Out-of-Distribution Detection for Real-World
    Settings*, ICML 2022.

    Fit: for every class ``k`` the model predicts on the fit data, the typical posterior
    ``d_k = mean{softmax(z(x')) : argmax z(x') = k}`` (labels are not needed; samples with
    labels ``< 0`` are ignored).

    Score (pytorch-ood ``KLMatching``): ``score(x) = min_k KL(p(x) || d_k)`` with
    ``p = softmax(z[:, :K])`` (higher = more OOD).

    Attack objective: ``attack_loss(x) = -min_k KL(p(x) || d_k) = -score(x)``, with
    ``p log p`` computed from ``log_softmax`` (finite gradients where ``p`` underflows):
    the attacker pulls the posterior towards the closest typical posterior.

    Args:
        model: classifier taking images in [0, 1].
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).

    After :meth:`fit`: buffer ``log_dists`` ``(C, K)``, the log typical posteriors of the
    ``C <= K`` predicted classes (``log 0`` replaced by the lowest float, as pytorch-ood).
    """

    requires_fit = True

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.register_buffer("log_dists", torch.empty(0))
        self.fit_shape: tuple[int, ...] | None = None

    def fit(self, loader: Iterable, *, max_samples: int | None = None, progress: bool = False) -> "KLMatching":
        """Typical posteriors from ``loader`` (batches ``(x, y)`` or ``x`` in [0, 1])."""
        k = self.num_classes
        dev = module_device(self.model)
        sums = torch.zeros(k, k, dtype=torch.float64, device=dev)
        counts = torch.zeros(k, dtype=torch.float64, device=dev)
        with eval_mode(self), torch.no_grad():
            for x, _ in iter_fit_batches(loader, dev, name="loader", max_samples=max_samples,
                                         show_progress=progress, desc="KLMatching"):
                self.fit_shape = tuple(x.shape[1:])
                p = torch.softmax(self.model(x)[:, :k], dim=1)
                onehot = torch.nn.functional.one_hot(p.argmax(dim=1), k).to(torch.float64)
                sums += onehot.T @ p.double()
                counts += onehot.sum(0)
        seen = counts > 0
        d = (sums[seen] / counts[seen, None]).to(torch.float32)
        self.log_dists = d.log().nan_to_num(neginf=torch.finfo(d.dtype).min)
        self.fitted = True
        return self

    def _kl(self, z: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(z[:, : self.num_classes], dim=1)
        p = logp.exp()
        return (p * logp).sum(dim=1, keepdim=True) - p @ self.log_dists.T  # (B, C)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        if self.fit_shape is not None and tuple(x.shape[1:]) != self.fit_shape:
            size_error(x, self)
        return self._kl(self.model(x)).amin(dim=1)
