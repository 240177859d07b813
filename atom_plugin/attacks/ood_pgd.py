"""L-inf PGD on an OOD detector's objective, keeping the per-sample best iterate."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import OODAttack, BestOf
from .registry import register_attack
from .steps import linf_sign_step

__all__ = ["OODPGD"]


@register_attack("pgd", threat="linf", gradient=True,
                 help="L-inf PGD, random start, restarts, best point kept (Madry et al. 2018; the paper's attack)")
class OODPGD(OODAttack):
    r"""Projected gradient ascent in the L-inf ball on a detector's attack objective
    (ATOM paper, Appendix B.4; Madry et al. 2018).

    Each restart starts uniformly at random in the ``eps``-ball (or at the input), takes
    ``steps`` sign-gradient steps of size ``alpha`` and projects onto the ``eps``-ball
    intersected with [0, 1].  Per sample, the best point seen over all steps and restarts is
    returned, **the clean input included as a candidate**, so the objective at the output is
    never worse than at the input (exactly, per sample).

    The input is evaluated once, with its gradient, and that gradient gives the **first**
    update of every restart (``x_1 = P(x_0 + alpha * sign(grad f(x)))`` from the random
    start ``x_0``); the next ``steps - 1`` updates use the gradient at the current iterate,
    and the last iterate is evaluated by a forward.  So the never-worse guarantee costs one
    forward per restart over ``torchattacks.PGD`` (``steps`` gradient evaluations too).

    Cost per call (``last_cost``, in images): ``1 + restarts * (steps - 1)`` forward-backward
    passes + ``restarts`` forwards; with ``threshold`` and ``early_stop=True`` an image stops
    as soon as it is accepted (from the input on), and random starts are drawn per image
    (:func:`~atom_plugin.attacks.base.image_seed`), so the FPR equals the one without early
    stopping.  Detectors whose score is not a function of the objective (e.g. MSP) take one
    more forward per evaluation when a threshold is set.

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
        seed: seed for the random starts (per image, on the input's device); ``None`` uses
            torch's global RNG.
        threshold, early_stop: see :class:`~atom_plugin.attacks.base.OODAttack`.

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
        threshold: float | None = None,
        early_stop: bool = False,
    ) -> None:
        super().__init__(
            "OODPGD", model, objective, num_classes, target=target, seed=seed, eps=eps, alpha=alpha,
            steps=steps, random_start=random_start, restarts=restarts, round_to_255=round_to_255,
            threshold=threshold, early_stop=early_stop,
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        self._reset_cost()
        B = x.shape[0]
        # The input is evaluated once, with its gradient: it is the never-worse candidate and
        # its gradient gives every restart's first update (no separate clean forward).
        clean_f, clean_g = self._clean_objective(x, with_grad=True)
        self._cost["forwards"] += B
        self._cost["backwards"] += B
        clean_s = self._success(x, clean_f)
        best = BestOf(clean_f, x, clean_s)
        active, idx = list(range(B)), None  # idx None: the whole batch is active (no indexing)
        xa, ga = x, clean_g
        if self.early_stop:
            idx = torch.arange(B, device=x.device)
            active, idx, xa, ga = self._compact(active, idx, ~clean_s, xa, ga)
        for r in range(self.restarts):
            if not active:
                break
            x_adv = self._random_start_images(xa, active, r) if self.random_start else xa
            g = ga
            for step in range(self.steps):
                x_adv = linf_sign_step(x_adv, g, xa, self.alpha, self.eps)
                f, g, succ = self._eval(x_adv, with_grad=step < self.steps - 1)
                best.update(f, x_adv, succ, idx)
                if self.early_stop:
                    active, idx, xa, ga, x_adv, g = self._compact(active, idx, ~succ, xa, ga, x_adv, g)
                    if not active:
                        break
        return self._finish_best(x, best, clean_f)
