"""One-step L-inf attack (FGSM) on an OOD detector's objective."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import OODAttack, BestOf
from .registry import register_attack

__all__ = ["OODFGSM"]


@register_attack("fgsm", threat="linf", gradient=True, help="one signed-gradient step of size eps (Goodfellow et al. 2015)")
class OODFGSM(OODAttack):
    r"""Fast gradient sign method on a detector's attack objective (Goodfellow et al. 2015):
    ``x' = clip_[0,1](x + eps * sign(grad_x (sign * attack_loss)(x)))``.

    Cost per call: 1 forward-backward at the clean input + 1 forward at the result.

    Args:
        model, objective, num_classes, target, round_to_255: as in
            :class:`~atom_plugin.attacks.OODPGD`.
        eps: L-inf radius and step size, ``>= 0``.
        keep_best: if True (default), per sample the clean input is returned where the
            FGSM point does not improve the objective, so the objective after the attack is
            never worse than before (the same guarantee as OODPGD; it costs nothing but the
            forward pass at the result).  False gives textbook FGSM, which can make the
            objective worse where the loss is not locally linear.
        threshold, early_stop: see :class:`~atom_plugin.attacks.base.OODAttack`; with
            ``early_stop`` the step is evaluated only for images the detector still rejects.

    Shape:
        images ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)``; labels ignored (may be None).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Callable | None = None,
        num_classes: int | None = None,
        eps: float = 8 / 255,
        target: str = "ood",
        round_to_255: bool = False,
        keep_best: bool = True,
        threshold: float | None = None,
        early_stop: bool = False,
    ) -> None:
        super().__init__("OODFGSM", model, objective, num_classes, target=target, eps=eps,
                         round_to_255=round_to_255, threshold=threshold, early_stop=early_stop)
        if not isinstance(keep_best, bool):
            raise TypeError(f"`keep_best` must be a bool, got {type(keep_best).__name__}.")
        self.keep_best = keep_best

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        self._reset_cost()
        B = x.shape[0]
        clean_f, g = self._clean_objective(x, with_grad=True)
        self._cost["forwards"] += B
        self._cost["backwards"] += B
        clean_s = self._success(x, clean_f)
        if not self.keep_best:  # textbook FGSM: the step is taken on every image
            x_adv = self._project(x + self.eps * g.sign(), x)
            f, _, succ = self._eval(x_adv, with_grad=False)
            if self.round_to_255:  # without keep_best, rounding must not fall back to the clean image
                x_adv = self._round(x_adv, x)
                f, _, succ = self._eval(x_adv, with_grad=False)
            self._last_objective, self._last_clean_objective = f * self.sign, clean_f * self.sign
            self._last_success = succ
            self._store_cost()
            return x_adv.detach()
        best = BestOf(clean_f, x, clean_s)
        if self.early_stop:  # the step only for images the detector still rejects
            active, idx, xa, ga = self._compact(list(range(B)), torch.arange(B, device=x.device), ~clean_s, x, g)
        else:
            active, idx, xa, ga = [0], None, x, g
        if active:
            x_adv = self._project(xa + self.eps * ga.sign(), xa)
            f, _, succ = self._eval(x_adv, with_grad=False)
            best.update(f, x_adv, succ, idx)
        return self._finish_best(x, best, clean_f)
