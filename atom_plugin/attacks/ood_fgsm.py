"""One-step L-inf attack (FGSM) on an OOD detector's objective."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import OODAttack
from .registry import register_attack

__all__ = ["OODFGSM"]


@register_attack("fgsm", threat="linf", gradient=True)
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
    ) -> None:
        super().__init__("OODFGSM", model, objective, num_classes, target=target, eps=eps,
                         round_to_255=round_to_255)
        if not isinstance(keep_best, bool):
            raise TypeError(f"`keep_best` must be a bool, got {type(keep_best).__name__}.")
        self.keep_best = keep_best

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        clean_f, g = self._clean_objective(x, with_grad=True)
        x_adv = self._project(x + self.eps * g.sign(), x)
        f = self._value(x_adv)
        if self.keep_best:
            best_f, best_x = self._keep_best(f, x_adv, clean_f, x.clone())
        else:
            best_f, best_x = f, x_adv
        if self.round_to_255 and not self.keep_best:
            # without keep_best, rounding must not fall back to the clean image either
            rx = self._round(best_x, x)
            self._last_objective, self._last_clean_objective = self._value(rx) * self.sign, clean_f * self.sign
            return rx.detach()
        return self._finish(x, best_x, best_f, clean_f)
