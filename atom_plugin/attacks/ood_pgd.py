"""L-inf PGD on an OOD detector's objective, keeping the per-sample best iterate."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import OODAttack
from .registry import register_attack
from .steps import linf_sign_step

__all__ = ["OODPGD"]


@register_attack("pgd", threat="linf", gradient=True)
class OODPGD(OODAttack):
    r"""Projected gradient ascent in the L-inf ball on a detector's attack objective
    (ATOM paper, Appendix B.4; Madry et al. 2018).

    Each restart starts uniformly at random in the ``eps``-ball (or at the input), takes
    ``steps`` sign-gradient steps of size ``alpha`` and projects onto the ``eps``-ball
    intersected with [0, 1].  Per sample, the best point seen over all steps and restarts is
    returned, **the clean input included as a candidate**, so the objective at the output is
    never worse than at the input (exactly, per sample).

    Cost per call: ``restarts * steps`` forward-backward passes + ``restarts + 1`` forwards
    (with ``random_start=False`` the clean pass doubles as the first step).

    Args:
        model: a Detector, or an ``nn.Module`` classifier with ``objective``.
        objective: callable ``logits -> (B,)`` maximized for OOD inputs (with a plain model).
        num_classes: ``K`` for ``objective``.
        eps: L-inf radius, ``>= 0`` (paper: 8/255).
        alpha: step size, ``> 0`` (paper: 1/255 for evaluation, 2/255 for training).
        steps: gradient steps per restart, ``>= 1`` (paper: 40 evaluation, 5 training).
        random_start: start uniformly in the ball (paper: yes).
        restarts: independent runs, ``>= 1`` (paper's strong attack: 5 with 100 steps).
        target: ``"ood"`` (maximize; OOD -> looks ID) or ``"in"`` (minimize; ID -> looks OOD).
        round_to_255: round the output to multiples of 1/255 inside the ball (valid 8-bit
            images when the input is 8-bit; the official ATOM code does this).  Off by
            default: the continuous optimum is returned; when on, the rounded candidate is
            re-evaluated and the clean image is returned where rounding made it worse.
        seed: seed for the random starts (a generator on the input's device); ``None`` uses
            torch's global RNG.

    Shape:
        images ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)``; labels ignored (may be None).

    Example::

        >>> atk = OODPGD(detector, eps=8/255, alpha=1/255, steps=40)
        >>> adv = atk(ood_images)          # detector.score(adv) is lower
        >>> atk.last_objective             # (B,) attack_loss at adv
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Callable | None = None,
        num_classes: int | None = None,
        eps: float = 8 / 255,
        alpha: float = 1 / 255,
        steps: int = 40,
        random_start: bool = True,
        restarts: int = 1,
        target: str = "ood",
        round_to_255: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            "OODPGD", model, objective, num_classes, target=target, seed=seed, eps=eps, alpha=alpha,
            steps=steps, random_start=random_start, restarts=restarts, round_to_255=round_to_255,
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        if self.random_start:
            clean_f, clean_g = self._clean_objective(x), None
        else:  # the first iterate is the clean point: reuse its gradient
            clean_f, clean_g = self._clean_objective(x, with_grad=True)
        best_f, best_x = clean_f, x.clone()
        gen = self._generator(x)
        for _ in range(self.restarts):
            x_adv = self._random_start(x, gen) if self.random_start else x.clone()
            for step in range(self.steps):
                if step == 0 and clean_g is not None:
                    f, g = clean_f, clean_g
                else:
                    f, g = self._value_and_grad(x_adv)
                best_f, best_x = self._keep_best(f, x_adv, best_f, best_x)
                x_adv = linf_sign_step(x_adv, g, x, self.alpha, self.eps)
            best_f, best_x = self._keep_best(self._value(x_adv), x_adv, best_f, best_x)
        return self._finish(x, best_x, best_f, clean_f)
