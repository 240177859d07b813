"""Gradient-masking diagnostics for an OOD detector under L-inf attack.

The checklist of Athalye et al. (ICML 2018, Sec. 3.1) and Carlini et al. (2019, "On
evaluating adversarial robustness", Sec. 5), adapted to OOD detection (the attacker pushes OOD
images below the detector's threshold):

1. ``zero_grad``: images whose input gradient of the attack objective at the clean point is
   exactly zero or not finite (saturated softmax / logistic, quantization, ``detach``);
2. ``blackbox_beats_whitebox``: the score-only Square attack gets images accepted that
   white-box PGD does not (a gradient that misleads);
3. ``more_steps_do_not_help``: PGD with 4x the steps (same seed) does not raise the FPR or the
   objective over PGD (an optimizer that is stuck);
4. ``unbounded_not_100``: an unbounded attack (``eps = 1``, any image) does not make every
   OOD image accepted (for a differentiable detector it always should).

Each triggered check adds a one-sentence warning.  :func:`masking_diagnostics` returns the
numbers and the warnings as a JSON-serialisable dict.
"""
from __future__ import annotations

from typing import Any

import torch

from .._utils import eval_mode
from .._validation import check_float, check_images, check_int
from ..detectors.base import Detector
from .ood_pgd import OODPGD
from .ood_square import OODSquare

__all__ = ["masking_diagnostics", "MASKING_CHECKS"]

#: check name -> what it means when it fires
MASKING_CHECKS = {
    "zero_grad": "zero or non-finite input gradient at the clean point",
    "blackbox_beats_whitebox": "the score-only Square attack beats white-box PGD",
    "more_steps_do_not_help": "4x more PGD steps do not help",
    "unbounded_not_100": "an unbounded attack (eps = 1) does not reach 100% FPR",
}


def _grad_stats(detector: Detector, x: torch.Tensor) -> tuple[float, float]:
    """Fractions of images whose objective gradient is all zero / has a non-finite entry."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = detector._attack_loss(xr)
        if not f.requires_grad:
            return 1.0, 0.0
        (g,) = torch.autograd.grad(f.sum(), xr, allow_unused=True)
    if g is None:
        return 1.0, 0.0
    g = g.flatten(1)
    nonfinite = ~torch.isfinite(g).all(dim=1)
    zero = (g == 0).all(dim=1) & ~nonfinite
    return zero.float().mean().item(), nonfinite.float().mean().item()


def masking_diagnostics(
    detector: Detector,
    x_ood: torch.Tensor,
    threshold: float,
    eps: float = 8 / 255,
    *,
    steps: int = 10,
    n_queries: int = 300,
    seed: int = 0,
    blackbox_margin: float = 0.05,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Run the four gradient-masking checks on OOD images ``x_ood`` at ``threshold``.

    Args:
        detector: an atom_plugin Detector (fitted).
        x_ood: OOD images ``(N, C, H, W)`` in [0, 1] (a few dozen to a few hundred suffice).
        threshold: the OOD-score threshold (e.g. at 95% TPR on natural ID data); an image is
            accepted when ``score <= threshold``.
        eps: the L-inf radius of the evaluation.
        steps: PGD steps, alpha = eps / 4 (the strong attack takes ``4 * steps``; the unbounded
            one is PGD with ``max(4 * steps, 100)`` steps of 2/255 from the input, stopping per
            image once accepted).
        n_queries: Square's query budget.
        seed: seed of every attack.
        blackbox_margin: ``blackbox_beats_whitebox`` fires when Square's FPR exceeds PGD's,
            or when more than this fraction of the images is accepted by Square only.
        batch_size: images per attack call.

    Returns:
        a dict: ``n_images``, ``eps``, ``threshold``, ``zero_grad_fraction``,
        ``nonfinite_grad_fraction``, ``fpr_clean``, ``fpr_pgd``, ``fpr_pgd_4x``,
        ``objective_gain_pgd``, ``objective_gain_pgd_4x``, ``fpr_square``,
        ``square_only_fraction``, ``fpr_unbounded``, ``differentiable``, ``checks``
        (name -> fired), ``warnings`` (sentences), ``cost`` (forwards/backwards, in images).
        For a detector without an input gradient the white-box numbers are ``None`` and only
        the black-box FPR is reported.
    """
    if not isinstance(detector, Detector):
        raise TypeError(f"`detector` must be an atom_plugin Detector, got {type(detector).__name__}.")
    check_images(x_ood, "x_ood")
    threshold = check_float(threshold, "threshold")
    eps = check_float(eps, "eps", low=0.0, high=1.0, low_open=True)
    steps = check_int(steps, "steps", low=1)
    n_queries = check_int(n_queries, "n_queries", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    detector.check_ready()
    r = _Runner(detector, x_ood.shape[0], batch_size)
    s0, f0 = r.scores_objective(x_ood)
    out: dict[str, Any] = {"n_images": r.n, "eps": eps, "threshold": threshold, "fpr_clean": _fpr(s0, threshold),
                           "differentiable": bool(getattr(detector, "differentiable", True))}
    sq = OODSquare(detector, eps=eps, n_queries=n_queries, p_init=0.8, seed=seed, threshold=threshold,
                   early_stop=True)
    acc_sq = r.scores_objective(r.run(sq, x_ood))[0] <= threshold
    out["fpr_square"] = acc_sq.float().mean().item()
    if out["differentiable"]:
        out.update(_whitebox_numbers(r, detector, x_ood, f0, acc_sq, threshold, eps, steps, seed))
        checks, warnings = _judge(out, steps, n_queries, blackbox_margin)
    else:
        out.update({k: None for k in _WHITEBOX_KEYS})
        checks, warnings = {k: False for k in MASKING_CHECKS}, []
    out.update(checks=checks, warnings=warnings, cost=r.cost)
    return out


_WHITEBOX_KEYS = ("zero_grad_fraction", "nonfinite_grad_fraction", "fpr_pgd", "fpr_pgd_4x", "objective_gain_pgd",
                  "objective_gain_pgd_4x", "square_only_fraction", "fpr_unbounded")


def _fpr(s: torch.Tensor, threshold: float) -> float:
    return (s <= threshold).float().mean().item()


class _Runner:
    """Runs attacks and scores in batches, counting forwards/backwards (in images)."""

    def __init__(self, detector: Detector, n: int, batch_size: int) -> None:
        self.det, self.n, self.bs = detector, n, batch_size
        self.cost = {"forwards": 0, "backwards": 0}

    def run(self, atk, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(0, self.n, self.bs):
            outs.append(atk(x[i:i + self.bs]))
            c = atk.last_cost or {}
            self.cost["forwards"] += c.get("forwards", 0)
            self.cost["backwards"] += c.get("backwards", 0)
        return torch.cat(outs)

    def scores_objective(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), eval_mode(self.det):
            s = torch.cat([self.det._score(x[i:i + self.bs]) for i in range(0, self.n, self.bs)])
            f = torch.cat([self.det._attack_loss(x[i:i + self.bs]) for i in range(0, self.n, self.bs)])
        self.cost["forwards"] += 2 * self.n
        return s, f


def _whitebox_numbers(r: _Runner, detector: Detector, x_ood: torch.Tensor, f0: torch.Tensor, acc_sq: torch.Tensor,
                      threshold: float, eps: float, steps: int, seed: int) -> dict[str, Any]:
    """Gradient statistics at the clean point, PGD with ``steps`` and ``4 * steps``, and an
    unbounded PGD from the input."""
    n, bs = r.n, r.bs
    with eval_mode(detector):
        zs = [_grad_stats(detector, x_ood[i:i + bs]) for i in range(0, n, bs)]
    sizes = [min(bs, n - i) for i in range(0, n, bs)]
    r.cost["forwards"] += n
    r.cost["backwards"] += n
    out: dict[str, Any] = {"zero_grad_fraction": sum(z * m for (z, _), m in zip(zs, sizes)) / n,
                           "nonfinite_grad_fraction": sum(q * m for (_, q), m in zip(zs, sizes)) / n}
    alpha = max(eps / 4, 1 / 255)
    s_p, f_p = r.scores_objective(r.run(OODPGD(detector, eps=eps, alpha=alpha, steps=steps, seed=seed), x_ood))
    s_p4, f_p4 = r.scores_objective(r.run(OODPGD(detector, eps=eps, alpha=alpha, steps=4 * steps, seed=seed), x_ood))
    acc_p, acc_p4 = s_p <= threshold, s_p4 <= threshold
    out.update(fpr_pgd=acc_p.float().mean().item(), fpr_pgd_4x=acc_p4.float().mean().item(),
               objective_gain_pgd=(f_p - f0).mean().item(), objective_gain_pgd_4x=(f_p4 - f0).mean().item(),
               square_only_fraction=(acc_sq & ~(acc_p | acc_p4)).float().mean().item())
    # from the input (a random start in the unbounded ball is uniform noise), small steps
    unb = OODPGD(detector, eps=1.0, alpha=2 / 255, steps=max(4 * steps, 100), random_start=False,
                 threshold=threshold, early_stop=True)
    out["fpr_unbounded"] = _fpr(r.scores_objective(r.run(unb, x_ood))[0], threshold)
    return out


def _judge(out: dict, steps: int, n_queries: int, blackbox_margin: float) -> tuple[dict, list]:
    """The four checks (name -> fired) and one warning sentence per fired check."""
    checks = {k: False for k in MASKING_CHECKS}
    warnings: list[str] = []
    if out["zero_grad_fraction"] + out["nonfinite_grad_fraction"] > 0:
        checks["zero_grad"] = True
        warnings.append(
            f"gradient masking: {100 * out['zero_grad_fraction']:.1f}% of the OOD images have an exactly zero and "
            f"{100 * out['nonfinite_grad_fraction']:.1f}% a non-finite input gradient of the attack objective at the "
            "clean point; white-box attacks cannot move them (use a non-saturating objective, BPDA for "
            "non-differentiable preprocessing, or the score-only attack).")
    best_wb = max(out["fpr_pgd"], out["fpr_pgd_4x"])
    if out["fpr_square"] > best_wb or out["square_only_fraction"] > blackbox_margin:
        checks["blackbox_beats_whitebox"] = True
        warnings.append(
            f"gradient masking: the score-only Square attack ({n_queries} queries) reaches FPR "
            f"{100 * out['fpr_square']:.1f}% vs {100 * best_wb:.1f}% for white-box PGD, and gets "
            f"{100 * out['square_only_fraction']:.1f}% of the images accepted that PGD does not; "
            "the white-box number is not a worst case (report OOD AutoAttack).")
    gain, gain4 = out["objective_gain_pgd"], out["objective_gain_pgd_4x"]
    if out["fpr_pgd_4x"] <= out["fpr_pgd"] and gain4 <= gain + 1e-3 * max(abs(gain), 1e-6) \
            and out["fpr_pgd"] < 1.0:
        checks["more_steps_do_not_help"] = True
        warnings.append(
            f"gradient masking: PGD with {4 * steps} steps is no better than with {steps} (FPR "
            f"{100 * out['fpr_pgd_4x']:.1f}% vs {100 * out['fpr_pgd']:.1f}%, mean objective gain {gain4:.4g} vs "
            f"{gain:.4g}); the optimizer is stuck.")
    if out["fpr_unbounded"] < 1.0:
        checks["unbounded_not_100"] = True
        warnings.append(
            f"gradient masking: an unbounded attack (eps = 1) makes only {100 * out['fpr_unbounded']:.1f}% of the "
            "OOD images accepted; for a differentiable detector it should reach 100%.")
    return checks, warnings
