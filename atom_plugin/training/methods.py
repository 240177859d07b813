"""Training recipes: how each method perturbs a batch and what loss it minimises.

The trainer runs one loop for every method.  Each step it calls
``recipe.perturb(model, x_in, y_in, x_out)`` with the model in **eval** mode (the
attacks; no parameter gradients), then runs **one** train-mode forward pass over
``cat(x_in', x_out')`` and calls ``recipe.loss(logits_in, y_in, logits_out)``.

=======  ==================================================================  ========
method   loss (``ℓ`` = cross-entropy)                                         outliers
=======  ==================================================================  ========
atom     ℓ(x,y) + λ·ℓ(x', K+1), x' = PGD on half the outliers, half clean     mined
ntom     ℓ(x,y) + λ·ℓ(x, K+1)  (eq. 7)                                        mined
oe       ℓ(x,y) + λ·CE(uniform over K, f(x_out))                              random
acet     as oe with PGD on half the outliers (max of the uniform CE)          random
aloe     ℓ(PGD_in(x), y) + λ·CE(uniform, f(PGD_out(x_out)))                   random
aoe      as oe on x_out − ε·sign(∇E(x_out)) (one FGSM step lowering energy)   random
=======  ==================================================================  ========

``K+1`` generalises to ``K+R``: the outlier target is "any reject class"
(``-log Σ_{r} softmax_{K+r}``).  ATOM and NTOM need ``R >= 1``; the others use the
first ``K`` logits for the outlier term and work on K-way or K+R models.

Attacks are L-inf PGD inside the ``eps`` ball and ``[0, 1]``, written here without
host-device synchronisation so the step loop never waits on the device.  The ATOM
inner max is the OOD attack with the ``reject_nll`` objective (maximised).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.steps import linf_random_start, linf_sign_step
from ..objectives import neg_energy, reject_nll, reject_sum_nll, uniform_ce
from .config import TrainConfig

__all__ = ["Recipe", "make_recipe", "pgd_maximize", "RECIPES"]


def pgd_maximize(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], *,
                 eps: float, alpha: float, steps: int, random_start: bool = True) -> torch.Tensor:
    """L-inf PGD that **maximises** ``objective(model(x'))`` (summed over the batch)
    over ``||x' - x||_inf <= eps``, ``x' in [0, 1]``.

    Args:
        model: maps ``(B, C, H, W)`` in [0, 1] to logits; used as is (callers set eval mode).
        x: ``(B, C, H, W)`` images in [0, 1].
        objective: logits ``(B, C')`` -> ``(B,)``.
        eps, alpha, steps: radius, step size, number of steps (``steps=1, alpha=eps,
            random_start=False`` is FGSM).
        random_start: start from a uniform point in the ball (global torch RNG).

    Returns:
        detached adversarial images, same shape/dtype/device as ``x``.
    """
    x = x.detach()
    if steps == 0 or eps == 0 or x.numel() == 0:
        return x.clone()
    adv = x.clone()
    if random_start:
        adv = linf_random_start(x, eps)
    for _ in range(steps):
        adv.requires_grad_(True)
        obj = objective(model(adv)).sum()
        (grad,) = torch.autograd.grad(obj, adv)
        with torch.no_grad():
            adv = linf_sign_step(adv, grad, x, alpha, eps)
    return adv.detach()


class Recipe:
    """A method = how to perturb a batch + the loss.  Subclasses override
    :meth:`perturb` and/or :meth:`outlier_loss`.

    Args:
        config: the :class:`TrainConfig` (``lam``, attack settings).
        num_classes: ``K``.  num_reject: ``R`` (model outputs ``K + R`` logits).
    """

    name = "base"
    #: needs a reject class (R >= 1)
    needs_reject = False

    def __init__(self, config: TrainConfig, num_classes: int, num_reject: int) -> None:
        self.cfg = config
        self.k = num_classes
        self.r = num_reject
        self.lam = config.lam_value
        if self.needs_reject and num_reject < 1:
            raise ValueError(
                f"method '{self.name}' trains a (K+1)-way detector but the model has {num_classes + num_reject} "
                f"outputs and K = {num_classes}, i.e. no reject class; wrap it with "
                f"atom_plugin.with_reject_head(model, {num_classes}) (or pass the right `num_classes`)."
            )

    # -- pieces ---------------------------------------------------------------------------
    def num_adv(self, batch: int) -> int:
        return int(round(self.cfg.adv_fraction * batch))

    def perturb(self, model: nn.Module, x_in: torch.Tensor, y_in: torch.Tensor,
                x_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the ID and outlier images of the train-mode forward (model in eval mode)."""
        return x_in, x_out

    def in_loss(self, logits_in: torch.Tensor, y_in: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits_in.float(), y_in)

    def outlier_loss(self, logits_out: torch.Tensor) -> torch.Tensor:  # (B_out,) per sample
        raise NotImplementedError

    def loss(self, logits_in: torch.Tensor, y_in: torch.Tensor,
             logits_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss and its parts (detached) for logging."""
        l_in = self.in_loss(logits_in, y_in)
        l_out = self.outlier_loss(logits_out.float()).mean() if logits_out.shape[0] else l_in.new_zeros(())
        total = l_in + self.lam * l_out
        return total, {"loss": total.detach(), "loss_in": l_in.detach(), "loss_out": l_out.detach()}


class _RejectMixin:
    needs_reject = True

    def outlier_loss(self, logits_out):
        # cross-entropy towards class K+1 (any reject class when R > 1)
        if self.r == 1:
            return reject_nll(logits_out, self.k)
        return reject_sum_nll(logits_out, self.k)


class NTOM(_RejectMixin, Recipe):
    """Natural training with informative outlier mining (eq. 7)."""

    name = "ntom"


class ATOM(_RejectMixin, Recipe):
    """Adversarial training with informative outlier mining (eq. 4): PGD maximising
    ``CE(x', K+1)`` on the first ``adv_fraction`` of the outlier batch, rest clean."""

    name = "atom"

    def perturb(self, model, x_in, y_in, x_out):
        m = self.num_adv(x_out.shape[0])
        if m == 0:
            return x_in, x_out
        c = self.cfg
        adv = pgd_maximize(model, x_out[:m], self.outlier_loss, eps=c.eps, alpha=c.alpha, steps=c.steps,
                           random_start=c.random_start)
        return x_in, torch.cat([adv, x_out[m:]], 0)


class OE(Recipe):
    """Outlier Exposure: uniform cross-entropy over the K classes on random outliers."""

    name = "oe"

    def outlier_loss(self, logits_out):
        return uniform_ce(logits_out, self.k)


class ACET(OE):
    """ACET with auxiliary outliers: PGD maximising the uniform CE (i.e. the confidence)
    on half the outlier batch, half clean (App. B.3)."""

    name = "acet"

    def perturb(self, model, x_in, y_in, x_out):
        m = self.num_adv(x_out.shape[0])
        if m == 0:
            return x_in, x_out
        c = self.cfg
        adv = pgd_maximize(model, x_out[:m], self.outlier_loss, eps=c.eps, alpha=c.alpha, steps=c.steps,
                           random_start=c.random_start)
        return x_in, torch.cat([adv, x_out[m:]], 0)


class ALOE(OE):
    """ALOE: adversarial ID images (PGD maximising CE(x, y)) and adversarial outliers
    (PGD maximising the uniform CE, i.e. the KL to uniform up to a constant); whole batches."""

    name = "aloe"

    def perturb(self, model, x_in, y_in, x_out):
        c = self.cfg
        adv_in = pgd_maximize(model, x_in, lambda z: F.cross_entropy(z.float(), y_in, reduction="none"),
                              eps=c.eps, alpha=c.alpha, steps=c.steps, random_start=c.random_start)
        adv_out = pgd_maximize(model, x_out, self.outlier_loss, eps=c.eps, alpha=c.alpha, steps=c.steps,
                               random_start=c.random_start)
        return adv_in, adv_out


class AOE(OE):
    """Adversarial Outlier Exposure: ``x - eps * sign(grad E(x))`` (one FGSM step that
    lowers the outliers' energy over the K logits), then the OE loss."""

    name = "aoe"

    def perturb(self, model, x_in, y_in, x_out):
        adv = pgd_maximize(model, x_out, lambda z: neg_energy(z[:, : self.k]), eps=self.cfg.eps,
                           alpha=self.cfg.eps, steps=1, random_start=False)
        return x_in, adv


RECIPES = {cls.name: cls for cls in (ATOM, NTOM, OE, ACET, ALOE, AOE)}


def make_recipe(config: TrainConfig, num_classes: int, num_reject: int) -> Recipe:
    """The recipe object of ``config.method`` for a ``K + R``-way model."""
    return RECIPES[config.method](config, num_classes, num_reject)
