"""GEN (Liu et al., "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
Detection", CVPR 2023)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .._validation import check_float, check_int
from .base import Detector
from .registry import register_detector

__all__ = ["GEN"]


@register_detector("gen", head="any", help="generalized entropy (Liu et al., CVPR 2023)")
class GEN(Detector):
    """Generalized entropy, Liu et al., *GEN: Pushing the Limits of Softmax-Based
    Out-of-Distribution Detection*, CVPR 2023.

    Score (pytorch-ood ``GEN``): with ``p = clamp(softmax(z[:, :K]), 1e-7, 1 - 1e-7)``
    sorted descending and truncated to the top ``M`` (all if ``M`` is ``None``),
    ``score(x) = mean_{j <= M} p_j^gamma (1 - p_j)^gamma`` (higher = more OOD; the mean
    instead of the paper's sum rescales by a constant).

    Attack objective: ``attack_loss(x) = -mean_j q_j^gamma (1 - q_j)^gamma`` with the
    *unclamped* ``q_j = softmax(z)_j`` written in log space
    (``exp(gamma (log q + log(1 - q)))``, ``log(1 - q)`` as ``log_softmax`` of the other
    logits), so a confident class (``q`` within ``1e-7`` of 1), where the clamped score
    has no gradient, still gives one.

    Args:
        model: classifier taking images in [0, 1].
        gamma: ``gamma > 0`` (0.1 in the paper).
        M: number of largest probabilities averaged (``None``: all ``K``).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, gamma: float = 0.1, M: int | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.gamma = check_float(gamma, "gamma", low=0.0, low_open=True)
        self.M = None if M is None else check_int(M, "M", low=1)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.model(x)[:, : self.num_classes], dim=1).clamp(1e-7, 1 - 1e-7)
        if self.M is not None:
            p = p.sort(dim=1, descending=True).values[:, : self.M]
        return (p.pow(self.gamma) * (1 - p).pow(self.gamma)).mean(dim=1)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)[:, : self.num_classes]
        if self.M is not None:
            z = z.sort(dim=1, descending=True).values  # softmax is monotone: same top-M classes
        logp = torch.log_softmax(z, dim=1)
        # log(1 - p_j): log1p(-p_j) is exact for every class but the top one (p_j <= 1/2);
        # for the top class, log(1 - p) = logsumexp of the other logits - logsumexp of all
        top = z.argmax(dim=1, keepdim=True)
        rest = torch.logsumexp(z.scatter(1, top, -torch.inf), dim=1, keepdim=True) - torch.logsumexp(
            z, dim=1, keepdim=True)
        log1m = torch.log1p(-logp.exp().clamp(max=0.5)).scatter(1, top, rest)  # clamp: no inf*0 in backward
        terms = torch.exp(self.gamma * (logp + log1m))
        if self.M is not None:
            terms = terms[:, : self.M]
        return -terms.mean(dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, M={self.M}"
