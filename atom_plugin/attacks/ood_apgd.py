"""APGD-style L-inf attack on an OOD detector's objective (adaptive step size, momentum)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .._validation import check_float
from .base import OODAttack, BestOf
from .registry import register_attack

__all__ = ["OODAPGD", "apgd_checkpoints"]


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts of updates) at which APGD checks its progress.

    Croce & Hein (2020), as in their reference code: the first check after
    ``max(int(0.22 N), 1)`` updates, then intervals shrinking by ``max(int(0.03 N), 1)``
    down to ``max(int(0.06 N), 1)``.  Only checks strictly before the last update matter.
    """
    first, decr, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, k, interval = [], first, first
    while k < steps:
        out.append(k)
        interval = max(interval - decr, least)
        k += interval
    return out


@register_attack("apgd", threat="linf", gradient=True, help="Auto-PGD, step-size free (Croce & Hein, ICML 2020)")
class OODAPGD(OODAttack):
    r"""Auto-PGD (Croce & Hein, ICML 2020) on a detector's per-sample attack objective, L-inf.

    Per sample: initial step size ``2 * eps``; an update is a projected sign-gradient step
    followed by momentum ``x_{k+1} = P(x_k + 0.75 (z_{k+1} - x_k) + 0.25 (x_k - x_{k-1}))``
    (no momentum on the first update).  At checkpoints (:func:`apgd_checkpoints`) a sample
    halves its step size and restarts from its best point if (1) the objective increased in
    fewer than ``rho = 0.75`` of the updates since the last checkpoint, or (2) its step size
    was not reduced at the last checkpoint and its best objective did not improve since.
    All bookkeeping is on tensors (no host-device sync in the loop).  As in :class:`OODPGD`
    the per-sample best point over all iterates and restarts is returned, the clean input
    included, so the objective never gets worse.

    Budget: ``steps`` gradient evaluations per restart (at ``x_0 .. x_{steps-1}``) plus a
    forward at the last iterate -- exactly the budget of ``OODPGD`` with the same
    ``steps`` and ``restarts``.  No step size to tune.

    Args:
        model, objective, num_classes, eps, steps, restarts, target, round_to_255, seed: as in
            :class:`~atom_plugin.attacks.OODPGD` (defaults: eps 8/255, 40 steps).
        random_start: start uniformly in the ball (default True); else at the input.
        rho: checkpoint success fraction (0.75 in the paper).
        momentum: weight ``alpha`` of the new step, ``1 - alpha`` of the previous one (0.75).
        threshold, early_stop: see :class:`~atom_plugin.attacks.base.OODAttack` (random starts
            are drawn per image, so early stopping does not change the FPR).

    Shape:
        images ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)``; labels ignored (may be None).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Callable | None = None,
        num_classes: int | None = None,
        eps: float = 8 / 255,
        steps: int = 40,
        random_start: bool = True,
        restarts: int = 1,
        target: str = "ood",
        round_to_255: bool = False,
        seed: int | None = None,
        rho: float = 0.75,
        momentum: float = 0.75,
        threshold: float | None = None,
        early_stop: bool = False,
    ) -> None:
        super().__init__(
            "OODAPGD", model, objective, num_classes, target=target, seed=seed, eps=eps, steps=steps,
            random_start=random_start, restarts=restarts, round_to_255=round_to_255, threshold=threshold,
            early_stop=early_stop,
        )
        self.rho = check_float(rho, "rho", low=0.0, high=1.0)
        self.momentum = check_float(momentum, "momentum", low=0.0, high=1.0, low_open=True)

    def _run(self, x: torch.Tensor, x0: torch.Tensor, f0: torch.Tensor, g0: torch.Tensor, best: BestOf,
             active: list, idx: torch.Tensor | None):
        """One APGD run from ``x0`` (signed objective ``f0`` and gradient ``g0`` given) on the
        images ``x`` (rows = ``active`` images, ``idx`` their indices or ``None`` for the whole
        batch); every evaluated point updates ``best``.  Returns the (possibly compacted)
        ``active, idx`` after early stopping."""
        view = (-1,) + (1,) * (x.dim() - 1)
        eta = torch.full((x.shape[0],) + (1,) * (x.dim() - 1), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        x_cur, f_cur, g = x0, f0, g0
        x_prev = x0
        best_f, best_x, best_g = f0, x0.clone(), g0.clone()
        checks = set(apgd_checkpoints(self.steps))
        n_inc = torch.zeros_like(f0)
        since = 0
        best_at_check = best_f.clone()
        reduced_at_check = torch.ones_like(f0, dtype=torch.bool)  # no "no improvement" rule at the 1st check
        for k in range(self.steps):
            z = self._project(x_cur + eta * g.sign(), x)
            if k == 0:
                x_new = z
            else:
                a = self.momentum
                x_new = self._project(x_cur + a * (z - x_cur) + (1.0 - a) * (x_cur - x_prev), x)
            last = k == self.steps - 1
            f_new, g_new, succ = self._eval(x_new, with_grad=not last)
            if last:
                g_new = g
            best.update(f_new, x_new, succ, idx)
            n_inc = n_inc + (f_new > f_cur).to(n_inc.dtype)
            better = f_new > best_f
            best_f = torch.where(better, f_new, best_f)
            best_x = torch.where(better.view(view), x_new, best_x)
            best_g = torch.where(better.view(view), g_new, best_g)
            x_prev, x_cur, f_cur, g = x_cur, x_new, f_new, g_new
            since += 1
            if (k + 1) in checks and not last:
                cond1 = n_inc < self.rho * since
                cond2 = (~reduced_at_check) & (best_f <= best_at_check)
                reduce = cond1 | cond2
                rv = reduce.view(view)
                eta = torch.where(rv, eta / 2.0, eta)
                x_cur = torch.where(rv, best_x, x_cur)
                g = torch.where(rv, best_g, g)
                f_cur = torch.where(reduce, best_f, f_cur)
                reduced_at_check, best_at_check = reduce, best_f.clone()
                n_inc = torch.zeros_like(n_inc)
                since = 0
            if self.early_stop and not last:
                (active, idx, x, eta, x_cur, f_cur, g, x_prev, best_f, best_x, best_g, n_inc, best_at_check,
                 reduced_at_check) = self._compact(active, idx, ~succ, x, eta, x_cur, f_cur, g, x_prev, best_f,
                                                   best_x, best_g, n_inc, best_at_check, reduced_at_check)
                if not active:
                    break
        return active, idx

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        self._reset_cost()
        B = x.shape[0]
        if self.random_start:
            clean_f, clean_g = self._clean_objective(x), None
        else:  # the first iterate is the clean point: reuse its gradient
            clean_f, clean_g = self._clean_objective(x, with_grad=True)
        self._cost["forwards"] += B
        self._cost["backwards"] += 0 if self.random_start else B
        clean_s = self._success(x, clean_f)
        best = BestOf(clean_f, x, clean_s)
        active, idx, xa, ga, fa = list(range(B)), None, x, clean_g, clean_f
        if self.early_stop:
            idx = torch.arange(B, device=x.device)
            active, idx, xa, ga, fa = self._compact(active, idx, ~clean_s, xa, ga, fa)
        for r in range(self.restarts):
            if not active:
                break
            if self.random_start:
                x0 = self._random_start_images(xa, active, r)
                f0, g0, s0 = self._eval(x0, with_grad=True)
                best.update(f0, x0, s0, idx)
                if self.early_stop:
                    active, idx, xa, x0, f0, g0, ga, fa = self._compact(active, idx, ~s0, xa, x0, f0, g0, ga, fa)
                    if not active:
                        break
            else:
                x0, f0, g0 = xa.clone(), fa, ga
            n_before = len(active)
            active2, idx2 = self._run(xa, x0, f0, g0, best, active, idx)
            if self.early_stop and len(active2) != n_before:
                keep = torch.isin(idx, idx2)
                active, idx, xa, ga, fa = self._compact(active, idx, keep, xa, ga, fa)
        return self._finish_best(x, best, clean_f)
