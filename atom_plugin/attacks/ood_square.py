"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf, on an OOD detector's score:
a score-only (black-box) attack that never takes a gradient."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .._validation import check_choice, check_float, check_int
from .base import OODAttack, BestOf
from .registry import register_attack

__all__ = ["OODSquare", "square_p_schedule"]

# (fraction of the way through a 10000-query run, divisor of p_init): the paper's schedule
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256), (10000, 512))


def square_p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (Andriushchenko et al.
    2020, Sec. 3 / App.): ``p_init`` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
    8000 of 10000 iterations (rescaled to ``n_iters``)."""
    t = int(it / max(n_iters, 1) * 10000)
    for bound, div in _SCHEDULE:
        if t <= bound:
            return p_init / div
    return p_init


@register_attack("square", threat="linf", gradient=False,
                 help="score-only L-inf Square Attack, random search on the detector score (Andriushchenko et al. 2020)")
class OODSquare(OODAttack):
    r"""Square Attack, L-inf, on a detector: random search that only **queries scores**
    (``detector._score`` / ``_attack_loss`` under ``torch.no_grad``), so it attacks
    detectors without a gradient (``differentiable = False``, third-party post-processors,
    quantized or otherwise gradient-masked pipelines).

    Algorithm (Andriushchenko et al. 2020, Alg. 1 / 3): start at ``x + eps * s`` with random
    vertical stripes ``s in {-1, 1}^{C x 1 x W}``; at iteration ``i`` pick a square window of
    side ``h = max(round(sqrt(p_i * H * W)), 1)`` (``p_i`` from :func:`square_p_schedule`) at a
    random position, set it to ``x_best +- 2 eps`` (one random sign per channel), project onto
    the ``eps``-ball and [0, 1], query, and keep the proposal if it improves the per-image
    objective.  Each image has its own window position, colours and stripes, drawn from a
    generator seeded by ``(seed, image index)`` (so early stopping does not change the
    result).  Where a window would leave the image unchanged, its colours are negated (the
    reference implementation resamples them instead).

    The attacked quantity is ``-score`` (``loss="score"``, default: what a black-box user
    of the detector observes, and what decides the FPR) or ``detector.attack_loss``
    (``loss="attack_loss"``).  The input is a candidate of the per-image best-of, so the
    attacked quantity at the output is never worse than at the input; with ``threshold``
    an accepted point wins, and with ``early_stop=True`` an image stops querying once
    accepted (the paper's per-image early exit).

    Args:
        model, objective, num_classes, target: as in :class:`~atom_plugin.attacks.OODPGD`.
        eps: L-inf radius in [0, 1] (8/255).
        n_queries: query budget per image, ``>= 1`` (the stripe initialization is the first
            query; the clean input's query is not counted here but is in ``last_cost``).
        p_init: initial fraction of pixels in a square, in (0, 1] (paper: 0.05 for L-inf;
            AutoAttack uses 0.8).
        loss: ``"score"`` or ``"attack_loss"`` (see above).
        threshold, early_stop: see :class:`~atom_plugin.attacks.base.OODAttack`.
        seed: seed of the per-image random draws (default 0; ``None``: torch's global RNG).

    After a call: ``last_objective`` / ``last_clean_objective`` (``detector.attack_loss`` at
    the output / input, as for every OOD attack), ``last_score`` (``detector.score`` at the
    output), ``last_queries`` ``(B,)`` (queries per image, ``<= n_queries``), ``last_success``
    (with a threshold) and ``last_cost`` (``{"forwards", "backwards": 0, "queries"}``).

    Shape:
        images ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)``; labels ignored (may be None).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Callable | None = None,
        num_classes: int | None = None,
        eps: float = 8 / 255,
        n_queries: int = 1000,
        p_init: float = 0.05,
        loss: str = "score",
        target: str = "ood",
        threshold: float | None = None,
        early_stop: bool = False,
        seed: int | None = 0,
    ) -> None:
        if isinstance(n_queries, bool) or not isinstance(n_queries, int):
            raise TypeError(f"`n_queries` must be an int (the query budget per image), got {type(n_queries).__name__}.")
        if n_queries < 1:
            raise ValueError(f"`n_queries` must be >= 1 (the number of score queries per image), got {n_queries}; "
                             "a black-box attack with no query budget cannot move an image.")
        super().__init__("OODSquare", model, objective, num_classes, target=target, seed=seed, eps=eps,
                         threshold=threshold, early_stop=early_stop)
        self.n_queries = check_int(n_queries, "n_queries", low=1)
        self.p_init = check_float(p_init, "p_init", low=0.0, high=1.0, low_open=True)
        self.loss = check_choice(loss, "loss", ("score", "attack_loss"))
        self._last_queries: torch.Tensor | None = None
        self._last_score: torch.Tensor | None = None

    @property
    def last_queries(self) -> torch.Tensor | None:
        """``(B,)`` long: score queries spent per image in the last call (init included)."""
        return self._last_queries

    @property
    def last_score(self) -> torch.Tensor | None:
        """``(B,)`` detector score at the images returned by the last call."""
        return self._last_score

    # -- queries --------------------------------------------------------------------------
    @torch.no_grad()
    def _query(self, x: torch.Tensor):
        """Signed attacked quantity and success at ``x`` (one forward per image; counted)."""
        self._cost["forwards"] += x.shape[0]
        if self.loss == "score":
            s = self._raw_score(x)
            f = -s * self.sign
            succ = None if self.threshold is None else self._success_of_score(s)
            return f, succ
        f = self._value(x)
        return f, self._success(x, f)

    # -- per-image random draws ----------------------------------------------------------
    def _draws(self, x: torch.Tensor, n_iters: int):
        """Per image: stripe signs ``(B, C, 1, W)``, window positions ``(B, n_iters, 2)`` in
        [0, 1) and channel signs ``(B, n_iters, C)``, from one generator per image."""
        B, C, _, W = x.shape
        u = self._image_uniform(x, list(range(B)), 0, shape=(C * W + n_iters * (2 + C),))
        stripes = torch.where(u[:, : C * W] < 0.5, -1.0, 1.0).to(x.dtype).view(B, C, 1, W)
        rest = u[:, C * W:].view(B, n_iters, 2 + C)
        pos = rest[..., :2]
        colors = torch.where(rest[..., 2:] < 0.5, -1.0, 1.0).to(x.dtype)
        return stripes, pos, colors

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        self._reset_cost()
        B, C, H, W = x.shape
        eps = self.eps
        n_iters = self.n_queries - 1
        clean_f, clean_s = self._query(x)
        best = BestOf(clean_f, x, clean_s)
        queries = torch.zeros(B, dtype=torch.long, device=x.device)
        stripes, pos, colors = self._draws(x, n_iters)
        # stripes initialization: the first query
        cur_x = (x + eps * stripes).clamp(0.0, 1.0)
        cur_f, succ = self._query(cur_x)
        queries += 1
        best.update(cur_f, cur_x, succ)
        active, idx = list(range(B)), torch.arange(B, device=x.device)
        xa = x
        if self.early_stop:
            active, idx, xa, cur_x, cur_f, pos, colors = self._compact(
                active, idx, ~best.succ, xa, cur_x, cur_f, pos, colors)
        rows = torch.arange(H, device=x.device)
        cols = torch.arange(W, device=x.device)
        for it in range(n_iters):
            if not active:
                break
            p = square_p_schedule(self.p_init, it, n_iters)
            side = min(max(int(round((p * H * W) ** 0.5)), 1), min(H, W) - 1 if min(H, W) > 1 else 1)
            top = (pos[:, it, 0] * (H - side + 1)).long().clamp_(max=H - side)
            left = (pos[:, it, 1] * (W - side + 1)).long().clamp_(max=W - side)
            in_h = (rows.view(1, H) >= top.view(-1, 1)) & (rows.view(1, H) < (top + side).view(-1, 1))
            in_w = (cols.view(1, W) >= left.view(-1, 1)) & (cols.view(1, W) < (left + side).view(-1, 1))
            window = (in_h.view(-1, 1, H, 1) & in_w.view(-1, 1, 1, W))
            col = colors[:, it].view(-1, C, 1, 1)
            lo, hi = (xa - eps).clamp(min=0.0), (xa + eps).clamp(max=1.0)
            prop = torch.where(window, (cur_x + 2.0 * eps * col).clamp(lo, hi), cur_x)
            same = ((prop - cur_x).abs() < 1e-7) | ~window
            unchanged = same.flatten(1).all(dim=1).view(-1, 1, 1, 1)
            prop = torch.where(window & unchanged, (cur_x - 2.0 * eps * col).clamp(lo, hi), prop)
            f, s = self._query(prop)
            queries[idx] += 1
            better = f > cur_f
            cur_f = torch.where(better, f, cur_f)
            cur_x = torch.where(better.view(-1, 1, 1, 1), prop, cur_x)
            best.update(f, prop, s, idx)
            if self.early_stop:
                active, idx, xa, cur_x, cur_f, pos, colors = self._compact(
                    active, idx, ~s, xa, cur_x, cur_f, pos, colors)
        out = best.x.detach()
        self._last_queries = queries
        with torch.no_grad():
            # report the detector's objective and score at the output (one forward each, or
            # none when they are the queried quantity)
            if self.loss == "score":
                self._last_score = -best.f * self.sign
                self._last_objective = self._value(out) * self.sign
                self._last_clean_objective = self._value(x) * self.sign
                self._cost["forwards"] += 2 * B
            else:
                self._last_objective, self._last_clean_objective = best.f * self.sign, clean_f * self.sign
                self._last_score = self._raw_score(out)
                self._cost["forwards"] += B
        self._last_success = None if best.succ is None else best.succ.clone()
        self._store_cost(queries=int(queries.sum()))
        return out
