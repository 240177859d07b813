"""ODIN (Liang et al., 2018): temperature scaling plus input preprocessing.

Differentiating through the preprocessing
-----------------------------------------
ODIN scores ``x~ = clamp(x + eps * sign(grad_x log S(x; T)), 0, 1)`` where ``S(x; T)`` is
the largest softmax probability at temperature ``T`` (the original code's
``x - eps * sign(grad CE(f(x)/T, argmax))``; since our models normalize inside, a step of
``eps`` in pixel space equals the original's ``eps / std`` step in normalized space).

The direction ``sign(grad ...)`` is piecewise constant in ``x``: its derivative is zero
almost everywhere (and undefined on the measure-zero set where a gradient coordinate
changes sign).  The exact gradient of ``score(x)`` therefore treats the direction as a
constant and differentiates the final softmax at the preprocessed point ``x~`` through
``x~ = clamp(x + const)`` (identity inside the box).  We compute it that way: the
direction comes from an inner ``torch.autograd.grad`` (no ``create_graph``: the graph
through ``sign`` would carry only zeros, at the cost of a double backward), then the
score is evaluated at ``x~`` with the graph to ``x`` kept.  So ``score`` and
``attack_loss`` are differentiable through both the temperature and the preprocessing,
with the true gradient (not a surrogate), and an attack on ``attack_loss`` is adaptive
to the detector exactly as deployed.  (The ATOM paper states eq. 115 for ODIN with ``F``
"the softmax output of the classifier"; here eq. 115 is applied to ODIN's tempered softmax
at the preprocessed input, i.e. to what ODIN actually thresholds.)

Scale of the objective
----------------------
At ``T = 1000`` the tempered softmax is nearly uniform, so ``uniform_ce(z / T)`` is
``log K`` plus about ``var(z) / (2 T^2)``: in float32 the excess is at the resolution
limit of the value (and the gradient scales like ``1 / T^2``).  ``attack_loss`` is
therefore ``T^2 (uniform_ce(z / T) - log K)``, computed without cancellation
(``log1p(mean(expm1(v)))``): a positive affine transform of eq. 115, so the same
maximizers and the same attack, but ``O(1)`` values and gradients at any ``T`` (it tends
to half the variance of the logits over classes as ``T -> infinity``).

Each call costs two forward passes and one backward pass of the model (plus the
attacker's backward).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validation import check_float
from .base import Detector
from .registry import register_detector

__all__ = ["ODIN", "excess_uniform_ce"]


def excess_uniform_ce(u: torch.Tensor) -> torch.Tensor:
    """``uniform_ce(u) - log K`` for logits ``u`` ``(B, K)``, accurate when ``u`` is nearly
    constant over classes (no cancellation against ``log K``) and when it is not."""
    v = u - u.mean(dim=1, keepdim=True)
    big = torch.logsumexp(v, dim=1) - math.log(u.shape[1])
    small = torch.log1p(torch.expm1(v.clamp(max=1.0)).mean(dim=1))
    return torch.where(v.amax(dim=1) < 1.0, small, big)


@register_detector("odin", head="any", help="temperature scaling + input preprocessing (Liang et al., ICLR 2018)")
class ODIN(Detector):
    """``score(x) = -max_i softmax(z(x~)[:, :K] / T)_i`` with ``x~`` the preprocessed input;
    ``attack_loss(x) = T^2 (uniform_ce(z(x~) / T, K) - log K)`` (paper eq. 115 through ODIN's
    temperature and preprocessing, rescaled for float32; see the module docstring).

    Args:
        model: classifier taking images in [0, 1].
        temperature: ``T > 0`` (1000 in the paper).
        epsilon: preprocessing step ``>= 0`` in pixel units ([0, 1] scale); 0 disables it.
            The paper tunes it per model (e.g. 0.0006-0.0016 for DenseNet).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
    """

    def __init__(self, model: nn.Module, temperature: float = 1000.0, epsilon: float = 0.0014,
                 num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        self.temperature = check_float(temperature, "temperature", low=0.0, low_open=True)
        self.epsilon = check_float(epsilon, "epsilon", low=0.0)

    def _tempered(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, : self.num_classes] / self.temperature

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``x~ = clamp(x + eps * sign(grad_x log max softmax(z(x)/T)), 0, 1)``, ``(B, C, H, W)``.

        Differentiable in ``x`` with the direction held constant (its exact derivative a.e.);
        works under ``torch.no_grad`` too (the inner gradient is computed regardless)."""
        if self.epsilon == 0.0:
            return x
        with torch.inference_mode(False), torch.enable_grad():  # also under no_grad / inference_mode
            xg = x.detach().clone().requires_grad_(True)
            log_smax = F.log_softmax(self._tempered(xg), dim=1).amax(dim=1)
            (g,) = torch.autograd.grad(log_smax.sum(), xg)
        return (x + self.epsilon * g.sign()).clamp(0.0, 1.0)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.softmax(self._tempered(self.preprocess(x)), dim=1).amax(dim=1)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature ** 2 * excess_uniform_ce(self._tempered(self.preprocess(x)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}, epsilon={self.epsilon}"
