"""Compositional attack: corruption attack, then L-inf PGD around the corrupted image
(ATOM paper, Section 5.1 / Appendix B.4 and the official code)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..corruptions import CORRUPTIONS
from .._validation import check_int
from .base import OODAttack
from .registry import register_attack
from .corruption import CorruptionAttack, CorruptionResult
from .ood_pgd import OODPGD

__all__ = ["CompositionalAttack"]


def _where(mask: torch.Tensor, new: tuple, old: tuple) -> tuple:
    """Per image (``mask`` (B,)), the tensors of ``new`` where ``mask`` else those of ``old``."""
    return tuple(torch.where(mask.view(-1, *([1] * (o.dim() - 1))), n, o) for n, o in zip(new, old))


@register_attack("compositional", threat="compositional", gradient=True,
                 help="a corruption, then an L-inf attack around the corrupted image")
class CompositionalAttack(OODAttack):
    r"""Corrupt, then perturb: the L-inf attack's ``eps``-ball is centred on the corrupted
    image chosen by the corruption attack (clamped to [0, 1]).

    With ``top_k > 1`` (a stronger variant), PGD runs from each of the ``k`` best corrupted
    candidates of every image and, per image, the result with the best attack objective
    (``detector.attack_loss``) is kept.  The output is within ``eps`` (L-inf) of
    ``last_center``, one corruption of the input (or the input itself).

    The attack objective and the detector score need not move together (for MSP, the
    uniform-CE objective can rise while the max-softmax falls), so a per-image check keeps
    the corrupted centre itself wherever PGD's result scores worse than it, and (``top_k >
    1``) the run from the best corruption wherever the objective's pick scores worse than
    that corruption: the output's OOD score is never worse than the corruption attack's,
    which is never worse than the clean input's.

    Args:
        model: a Detector, or an ``nn.Module`` with ``objective``.
        corruption_attack: a :class:`CorruptionAttack` (default: one built on the same
            detector with ``corruptions``, ``severities``, ``backend``, ``seed``,
            ``batch_size``, ``progress``).
        linf_attack: an L-inf OOD attack called as ``linf_attack(images)`` that keeps its
            output within its ``eps`` of its input and sets ``last_objective`` (default:
            :class:`OODPGD` with ``eps``, ``alpha``, ``steps``, random start, ``seed``).
        top_k: number of corrupted starting points per image (``>= 1``).
        eps, alpha, steps: parameters of the default PGD (paper: 8/255, 1/255, 40).
        table: severity table of the default corruption attack (``"auto"``: by image
            size, ``"cifar"`` for 32 x 32; see :class:`CorruptionAttack`).

    Calling ``attack(images, corruption_result=res)`` with ``res`` the
    :class:`CorruptionResult` of a :class:`CorruptionAttack` search on the same images
    (``corruption_attack.last_topk`` after ``corruption_attack(images)``; it must hold at
    least ``top_k`` candidates per image, from the same candidate list) starts PGD from
    it instead of searching again.

    After a call: ``last_center`` (the corrupted images the balls are centred on),
    ``last_winner`` / ``last_winner_index`` (which corruption was used, -1 = clean),
    ``last_objective`` ``(B,)``, ``last_scores`` ``(B,)`` (the detector's OOD scores of
    the returned images, already computed by the attack) and ``resolved_table``.
    """

    def __init__(
        self,
        model: nn.Module,
        corruption_attack: CorruptionAttack | None = None,
        linf_attack: OODAttack | None = None,
        top_k: int = 1,
        eps: float = 8 / 255,
        alpha: float = 1 / 255,
        steps: int = 40,
        random_start: bool = True,
        seed: int | None = 0,
        corruptions: Sequence[str] = CORRUPTIONS,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        backend: str = "torch",
        batch_size: int | None = None,
        progress: bool = False,
        objective: Callable | None = None,
        num_classes: int | None = None,
        target: str = "ood",
        table: str = "auto",
    ) -> None:
        super().__init__("CompositionalAttack", model, objective, num_classes, target=target, seed=seed,
                         eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.top_k = check_int(top_k, "top_k", low=1)
        if corruption_attack is None:
            corruption_attack = CorruptionAttack(self.model, corruptions, severities, backend, seed, batch_size,
                                                 progress, target=target, table=table, top_k=self.top_k)
        elif not isinstance(corruption_attack, CorruptionAttack):
            raise TypeError(f"`corruption_attack` must be a CorruptionAttack, got {type(corruption_attack).__name__}.")
        if linf_attack is None:
            linf_attack = OODPGD(self.model, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                                 target=target, seed=seed)
        elif not callable(linf_attack):
            raise TypeError(f"`linf_attack` must be a callable attack, got {type(linf_attack).__name__}.")
        self.corruption_attack = corruption_attack
        self.linf_attack = linf_attack
        self.last_center: torch.Tensor | None = None
        self.last_winner: list[str] | None = None
        self.last_winner_index: torch.Tensor | None = None
        self.last_scores: torch.Tensor | None = None

    @property
    def table(self) -> str:
        return self.corruption_attack.table

    @property
    def resolved_table(self) -> str | None:
        return self.corruption_attack.resolved_table

    def _check_result(self, res, x: torch.Tensor) -> CorruptionResult:
        ca = self.corruption_attack
        if not isinstance(res, CorruptionResult):
            raise TypeError(f"`corruption_result` must be a CorruptionResult (a CorruptionAttack's `last_topk`), "
                            f"got {type(res).__name__}.")
        B = x.shape[0]
        if res.images.shape[0] != B or tuple(res.images.shape[2:]) != tuple(x.shape[1:]):
            raise ValueError(f"`corruption_result` holds images of shape {tuple(res.images.shape)}, which does not "
                             f"match the batch {tuple(x.shape)}; pass the result of a search on these images.")
        if res.k < min(self.top_k, len(ca.candidates) + 1):
            raise ValueError(f"`corruption_result` keeps {res.k} candidates per image but top_k={self.top_k}; run "
                             f"the corruption attack with top_k={self.top_k}.")
        if tuple(res.candidates) != tuple(ca.candidates) or res.target != self.target:
            raise ValueError("`corruption_result` comes from a search over other candidates (corruptions x "
                             "severities) or another target than this attack's corruption attack; build both "
                             "with the same corruptions, severities and target.")
        return res

    def win_histogram(self, by_severity: bool = False) -> dict:
        """The corruption attack's accumulated win histogram."""
        return self.corruption_attack.win_histogram(by_severity)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                corruption_result: CorruptionResult | None = None) -> torch.Tensor:
        x = self._prepare(images)
        ca = self.corruption_attack
        if corruption_result is None:
            res = ca.search(x, self.top_k)
        else:
            res = self._check_result(corruption_result, x)
            ca.resolved_table = res.table
            ca._record(res.index[:, 0], res.keys[:, 0], res.clean_scores * self.sign)
        kk = min(self.top_k, res.k)
        keys, cands, idx = res.keys[:, :kk], res.images[:, :kk].to(x.dtype), res.index[:, :kk]
        best = first = None  # (objective, result, centre, candidate index, key), per image
        for j in range(cands.shape[1]):
            center = cands[:, j].contiguous()
            adv = self.linf_attack(center)
            f = self.linf_attack.last_objective
            if f is None:
                f = self.objective(adv).detach()
            f = f * self.sign
            # never keep a point that scores worse than its own (corrupted) centre
            k_adv = ca._key(adv)
            worse = k_adv > keys[:, j]
            adv = torch.where(worse.view(-1, 1, 1, 1), center, adv)
            k_adv = torch.where(worse, keys[:, j], k_adv)
            if bool(worse.any()):
                with torch.no_grad():
                    f = torch.where(worse, self.objective(center).detach() * self.sign, f)
            run = (f, adv, center, idx[:, j], k_adv)
            if best is None:
                best = first = run  # first scores <= keys[:, 0], the corruption attack's best
            else:
                best = _where(f > best[0], run, best)
        if cands.shape[1] > 1:
            # the objective picked a later start whose result scores worse than the corruption
            # attack's best: keep the run from the best corruption instead
            best = _where(best[4] > keys[:, 0], first, best)
        best_f, best_x, best_c, best_i, best_k = best
        self.last_center = best_c.detach()
        self.last_winner_index = best_i.detach()
        self.last_winner = [ca.candidate_name(i) for i in best_i.tolist()]
        self._last_objective = (best_f * self.sign).detach()
        self.last_scores = (best_k * self.sign).detach()
        with torch.no_grad():
            self._last_clean_objective = self.objective(x).detach()
        return best_x.detach().clamp(0, 1).to(images.dtype)
