"""Best-of combination of OOD attacks (the OOD counterpart of ``torchattacks.MultiAttack``)."""
from __future__ import annotations

from typing import Sequence

import torch

from .._validation import check_scores
from .base import OODAttack

__all__ = ["OODMultiAttack"]


class OODMultiAttack(OODAttack):
    r"""Run several OOD attacks on the same detector and keep, per sample, the output with
    the best objective (highest ``attack_loss`` for ``target="ood"``, lowest for ``"in"``),
    the clean input included.

    ``torchattacks.MultiAttack`` instead keeps, per sample, the first attack whose output
    is *misclassified* and returns the clean input where none succeeds; for OOD attacks it
    needs labels (0 = OOD input, 1 = ID input) and a decision threshold (see
    :meth:`OODAttack.set_threshold`).  This combiner needs neither, every attack runs on
    every sample, and the result is never worse than the best single attack.

    Args:
        attacks: :class:`OODAttack` instances on the same detector object and with the same
            ``target``.
        verbose: print how many samples each attack won.

    After a call: ``last_objective`` / ``last_clean_objective`` ``(B,)`` as for every OOD
    attack, and ``last_winner`` ``(B,)`` long: index of the winning attack, ``-1`` where the
    clean input was kept.
    """

    def __init__(self, attacks: Sequence[OODAttack], verbose: bool = False) -> None:
        attacks = list(attacks) if not isinstance(attacks, OODAttack) else [attacks]
        if not attacks:
            raise ValueError("`attacks` must contain at least one OODAttack.")
        for i, a in enumerate(attacks):
            if not isinstance(a, OODAttack):
                raise TypeError(f"`attacks[{i}]` must be an atom_plugin OODAttack, got {type(a).__name__}; "
                                "use torchattacks.MultiAttack for classification attacks.")
            if a.detector is not attacks[0].detector:
                raise ValueError(f"`attacks[{i}]` attacks a different detector than `attacks[0]`; all attacks "
                                 "must be built on the same detector object.")
            if a.target != attacks[0].target:
                raise ValueError(f"`attacks[{i}]` has target={a.target!r} but `attacks[0]` has "
                                 f"target={attacks[0].target!r}; combine attacks of one direction.")
        super().__init__("OODMultiAttack", attacks[0].model, target=attacks[0].target)
        self.attacks = attacks
        self.verbose = bool(verbose)
        self._last_winner: torch.Tensor | None = None

    @property
    def last_winner(self) -> torch.Tensor | None:
        """``(B,)`` index of the attack whose output was returned (-1: the clean input)."""
        return self._last_winner

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        clean_f = check_scores(self._value(x), "objective at the clean images")
        best_f, best_x = clean_f, x.clone()
        winner = torch.full_like(clean_f, -1, dtype=torch.long)
        for i, atk in enumerate(self.attacks):
            adv = atk(x, labels)
            f = atk.last_objective * self.sign
            better = f > best_f
            winner = torch.where(better, torch.full_like(winner, i), winner)
            best_f, best_x = self._keep_best(f, adv, best_f, best_x)
        self._last_winner = winner
        if self.verbose:
            counts = torch.bincount(winner + 1, minlength=len(self.attacks) + 1).tolist()
            print("OODMultiAttack wins: clean %d | " % counts[0]
                  + " | ".join(f"{a.attack} {c}" for a, c in zip(self.attacks, counts[1:])))
        self._last_objective = (best_f * self.sign).detach()
        self._last_clean_objective = (clean_f * self.sign).detach()
        return best_x.detach()
