"""OOD AutoAttack: a fixed, parameter-free ensemble of complementary attacks on a detector
(the OOD counterpart of Croce & Hein 2020's AutoAttack)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .._validation import check_choice, check_float, check_int
from .base import OODAttack
from .ood_apgd import OODAPGD
from .ood_square import OODSquare
from .registry import register_attack

__all__ = ["OODAutoAttack", "margin_objective", "AUTOATTACK_VERSIONS"]

#: Budgets per version: APGD steps per objective, EOT draws, Square queries and p_init.
AUTOATTACK_VERSIONS = {
    "standard": dict(apgd_steps=100, eot_iter=1, n_queries=5000, p_init=0.8),
    "rand": dict(apgd_steps=100, eot_iter=20, n_queries=5000, p_init=0.8),
    "fast": dict(apgd_steps=25, eot_iter=1, n_queries=500, p_init=0.8),
}


def _logit_margin_k1(model: nn.Module, k: int) -> Callable:
    def margin(x: torch.Tensor) -> torch.Tensor:  # max_k z_k - max_r z_{K+r}  (= -(z_{K+1} - max_k z_k))
        z = model(x)
        return z[:, :k].amax(dim=1) - z[:, k:].amax(dim=1)
    return margin


def _logit_margin(model: nn.Module, k: int | None) -> Callable:
    def margin(x: torch.Tensor) -> torch.Tensor:  # top-1 minus top-2 logit of the K classes
        z = model(x)
        z = z[:, :k] if k is not None else z
        top = z.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]
    return margin


def margin_objective(detector) -> tuple[Callable, str]:
    """The second objective of :class:`OODAutoAttack` for ``detector``, maximized by the
    attacker of an OOD input, and its name.  It is chosen to behave differently from the
    detector's own objective where that one is masked (saturated softmax, logistic):

    * ``detector._margin_attack_loss`` if the detector defines one;
    * K+1 / K+R models (``RejectClass``, ``RejectSum``): ``max_k z_k - max_r z_{K+r}`` (the
      negative of ``z_{K+1} - max_k z_k``), a logit margin with no softmax;
    * Mahalanobis with the paper's eq. 116 (``attack_objective="logistic"``, a softplus that
      saturates: exactly zero float32 gradient once the OOD logit exceeds ~104): ``-score``,
      the OOD logit itself (linear in the layer distances, never saturates);
    * Mahalanobis with the non-saturating default objective (which already is ``-score``):
      the sum over layers of the negative minimum class-conditional distance (the raw
      distances, without the fitted logistic weights);
    * distance detectors (KNN, ViM, RMD, ...) and score-only detectors: ``-score`` (their
      score is already a raw distance / residual);
    * other classifier-based detectors (MSP, Energy, MaxLogit, ODIN, ...): the max-logit
      margin ``z_(1) - z_(2)`` over the K classes.
    """
    fn = getattr(detector, "_margin_attack_loss", None)
    if callable(fn):
        return fn, "detector margin"
    from ..detectors.mahalanobis import Mahalanobis
    from ..detectors.reject import RejectClass, RejectSum

    if isinstance(detector, (RejectClass, RejectSum)):
        return _logit_margin_k1(detector.model, detector.num_classes), "logit margin max_k z_k - z_reject"
    if isinstance(detector, Mahalanobis):
        if detector.attack_objective == "logistic":
            return (lambda x: -detector._score(x)), "-score (OOD logit: eq. 116 without the softplus)"
        return (lambda x: detector._layer_scores(x).sum(dim=1)), "negative raw Mahalanobis distance"
    name = type(detector).__name__.lower()
    distance_like = any(t in name for t in ("knn", "vim", "rmd", "mahalanobis", "distance", "score"))
    model = getattr(detector, "model", None)
    k = getattr(detector, "num_classes", None)
    if distance_like or not isinstance(model, nn.Module) or (k is not None and k < 2):
        return (lambda x: -detector._score(x)), "-score"
    return _logit_margin(model, k), "max-logit margin z_(1) - z_(2)"


@register_attack("auto", threat="linf", gradient=False,
                 help="OOD AutoAttack: APGD on the detector's objective, APGD on a margin, Square (score-only "
                      "detectors: Square alone); per-image worst point")
class OODAutoAttack(OODAttack):
    r"""OOD AutoAttack: a fixed sequence of complementary L-inf attacks with no parameter to
    tune, keeping per image the point the detector finds **most in-distribution** (lowest
    score; for ``target="in"`` the highest) over all of them, the input included.

    Components (``version``):

    1. ``apgd``: :class:`OODAPGD` on the detector's attack objective;
    2. ``apgd-margin``: :class:`OODAPGD` on a second objective that behaves differently under
       masking (:func:`margin_objective`: a K+1 logit margin, the max-logit margin, the raw
       Mahalanobis distance, ...);
    3. ``square``: the score-only :class:`OODSquare` (``p_init=0.8`` as in AutoAttack).

    Budgets: ``"standard"``: APGD 100 steps each, Square 5000 queries; ``"fast"``: APGD 25
    steps, Square 500 queries; ``"rand"``: as standard, with EOT (the APGD gradient and value
    averaged over 20 evaluations) for randomized detectors / defenses.  Detectors without
    an input gradient (``differentiable = False``, or an objective computed without autograd)
    get Square alone (recorded in ``last_skipped``).

    As in AutoAttack, with a ``threshold`` (the score at 95% TPR on natural ID data) each
    component attacks only the images not yet accepted (``score <= threshold``), and stops
    on an image as soon as it is accepted; the FPR at the threshold is therefore the one of
    the per-image best over all components, at a fraction of the cost.  Without a threshold
    every component runs on every image.

    Args:
        model: a Detector (or an ``nn.Module`` with ``objective``, ``num_classes``).
        eps: L-inf radius in [0, 1] (8/255).
        version: ``"standard"``, ``"rand"`` or ``"fast"``.
        threshold: OOD-score threshold (finite) or ``None``.
        seed: seed of every component (default 0; ``None``: torch's global RNG).
        target: ``"ood"`` (default) or ``"in"`` (ID inputs pushed to look OOD).
        apgd_steps, n_queries, eot_iter: override the version's budget (``None``: the
            version's; for equal-budget comparisons and tests).

    After a call: ``last_winner`` ``(B,)`` long (index into ``components``, ``-1`` = the
    input was kept), ``last_score`` ``(B,)``, ``last_objective`` / ``last_clean_objective``,
    ``last_success`` (with a threshold), ``last_cost`` (``forwards``, ``backwards``,
    ``queries``, all in images, and per component under ``"per_attack"``), ``last_wins``
    (``{component: number of images it won}``).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        version: str = "standard",
        threshold: float | None = None,
        seed: int | None = 0,
        target: str = "ood",
        apgd_steps: int | None = None,
        n_queries: int | None = None,
        eot_iter: int | None = None,
        objective: Callable | None = None,
        num_classes: int | None = None,
    ) -> None:
        version = check_choice(version, "version", tuple(AUTOATTACK_VERSIONS))
        if threshold is not None:
            threshold = check_float(threshold, "threshold")
        super().__init__("OODAutoAttack", model, objective, num_classes, target=target, seed=seed, eps=eps,
                         threshold=threshold, early_stop=threshold is not None)
        budget = dict(AUTOATTACK_VERSIONS[version])
        if apgd_steps is not None:
            budget["apgd_steps"] = check_int(apgd_steps, "apgd_steps", low=1)
        if eot_iter is not None:
            budget["eot_iter"] = check_int(eot_iter, "eot_iter", low=1)
        self.version = version
        self.budget = budget
        es = dict(threshold=threshold, early_stop=threshold is not None)
        apgd = OODAPGD(self.model, eps=eps, steps=budget["apgd_steps"], target=target, seed=seed, **es)
        apgd_m = OODAPGD(self.model, eps=eps, steps=budget["apgd_steps"], target=target, seed=seed, **es)
        fn, self.margin_name = margin_objective(self.detector)
        apgd_m._objective_fn = fn
        for a in (apgd, apgd_m):
            a.eot_iter = budget["eot_iter"]
        nq = budget["n_queries"] if n_queries is None else n_queries
        square = OODSquare(self.model, eps=eps, n_queries=nq, p_init=budget["p_init"], target=target, seed=seed, **es)
        budget["n_queries"] = square.n_queries
        self.components: dict[str, OODAttack] = {"apgd": apgd, "apgd-margin": apgd_m, "square": square}
        self._last_winner: torch.Tensor | None = None
        self._last_score: torch.Tensor | None = None
        self.last_skipped: list[str] = []

    @property
    def last_winner(self) -> torch.Tensor | None:
        """``(B,)`` index into ``list(components)`` of the attack whose point was kept (-1: input)."""
        return self._last_winner

    @property
    def last_score(self) -> torch.Tensor | None:
        return self._last_score

    @property
    def last_wins(self) -> dict | None:
        if self._last_winner is None:
            return None
        names = ["clean"] + list(self.components)
        counts = torch.bincount(self._last_winner + 1, minlength=len(names)).tolist()
        return dict(zip(names, counts))

    def _gradient_ok(self) -> bool:
        return bool(getattr(self.detector, "differentiable", True))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        self._reset_cost()
        B = x.shape[0]
        lower_better = self.target == "ood"
        best_s = self._raw_score(x)
        self._cost["forwards"] += B
        best_x = x.clone()
        winner = torch.full((B,), -1, dtype=torch.long, device=x.device)
        per_attack: dict[str, dict] = {}
        self.last_skipped = []
        queries = 0
        for i, (name, atk) in enumerate(self.components.items()):
            if name.startswith("apgd") and not self._gradient_ok():
                self.last_skipped.append(name)
                continue
            if self.threshold is not None:
                todo = torch.nonzero(~self._success_of_score(best_s), as_tuple=True)[0]
                if todo.numel() == 0:
                    break
                sub = x[todo]
            else:
                todo, sub = None, x
            # the component draws image i's randomness as it would on the whole batch, so its
            # result on an image is the one it gets when run alone
            atk._image_ids = None if todo is None else todo.tolist()
            try:
                adv = atk(sub)
            except ValueError as err:
                if name.startswith("apgd") and "not differentiable" in str(err):
                    self.last_skipped.append(name)
                    continue
                raise
            finally:
                atk._image_ids = None
            c = atk.last_cost or {}
            per_attack[name] = c
            for key in ("forwards", "backwards"):
                self._cost[key] += c.get(key, 0)
            queries += c.get("queries", 0)
            if isinstance(atk, OODSquare):
                s = atk.last_score
            else:
                s = self._raw_score(adv)
                self._cost["forwards"] += adv.shape[0]
            cur = best_s if todo is None else best_s[todo]
            better = s < cur if lower_better else s > cur
            view = (-1,) + (1,) * (x.dim() - 1)
            if todo is None:
                best_s = torch.where(better, s, best_s)
                best_x = torch.where(better.view(view), adv, best_x)
                winner = torch.where(better, torch.full_like(winner, i), winner)
            else:
                best_s[todo] = torch.where(better, s, cur)
                best_x[todo] = torch.where(better.view(view), adv, best_x[todo])
                winner[todo] = torch.where(better, torch.full_like(winner[todo], i), winner[todo])
        with torch.no_grad():
            self._last_objective = self.objective(best_x).detach()
            self._last_clean_objective = self.objective(x).detach()
        self._cost["forwards"] += 2 * B
        self._last_score = best_s
        self._last_winner = winner
        self._last_success = None if self.threshold is None else self._success_of_score(best_s)
        self._store_cost(queries=queries, per_attack=per_attack)
        return best_x.detach()
