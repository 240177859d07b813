"""Base class of the OOD attacks: a :class:`torchattacks.Attack` on a detector's objective.

An OOD attack perturbs images so that a :class:`~atom_plugin.detectors.base.Detector`
changes its mind:

* ``target="ood"`` (default): the inputs are OOD; the attack **maximizes**
  ``detector.attack_loss`` (ATOM paper eq. 115-118) so they look in-distribution;
* ``target="in"``: the inputs are in-distribution; the attack **minimizes** the same
  objective so they look OOD (ALOE / "In" attacks).

Internally every attack maximizes ``sign * attack_loss`` with ``sign = +1`` / ``-1``.

torchattacks integration
------------------------
``attack.model`` is a :class:`DetectorDecision`, the detector seen as a 2-way classifier
(class 0 = "OOD", rejected; class 1 = "ID", accepted at a score ``threshold``).  torchattacks
code that reads ``get_logits(x).argmax(1)`` and compares it with labels (``MultiAttack``,
``Attack.save``) therefore reads "does the detector still classify this input
correctly?" when given labels ``0`` for OOD inputs and ``1`` for ID inputs.  The threshold
(e.g. the score at 95% TPR on ID data) must be set with :meth:`OODAttack.set_threshold`
before such code runs; it is shared by all attacks built on the same detector object.
Our attacks themselves never need labels or a threshold (``labels=None`` works).
The detector itself is ``attack.detector``.

Threshold-aware attacks and early stopping
------------------------------------------
Every OOD attack takes ``threshold=`` (an OOD-score threshold, e.g. the score at 95% TPR
on natural ID data) and ``early_stop=``.  With a threshold, an image *succeeds* when the
detector accepts it (``score <= threshold``; for ``target="in"``: rejects it, ``score >
threshold``), and the per-image best-of prefers a successful point to an unsuccessful one
(then the higher objective), so the FPR at the threshold is computed on the best point.
(The never-worse guarantee then holds for the key ``(success, objective)``: an accepted
point may replace an input whose objective was higher, when the score is not a monotone
function of the objective, e.g. MSP.)
With ``early_stop=True`` an image that has succeeded is dropped from the batch: it takes no
more steps (the FPR is the same, the cost lower; AUROC/AUPR are then no longer worst-case).
Random draws are seeded **per image** (from ``seed`` and the image's index within the
call), so an image's trajectory does not depend on which other images are still active.

Cost accounting: after each call ``last_cost`` is ``{"forwards": n, "backwards": m}``
counted in images (a batch of 8 through the detector counts 8), and ``last_success``
``(B,)`` bool is set when a threshold is given.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable

import torch
import torch.nn as nn
from torchattacks.attack import Attack as _TAAttack

from .._validation import check_choice, check_float, check_images, check_int, check_scores
from ..detectors.base import Detector
from .steps import linf_project, linf_random_start

__all__ = ["OODAttack", "DetectorDecision", "image_seed"]

_DECISION_ATTR = "_atom_plugin_decision"
_MASK64 = (1 << 64) - 1


def image_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for image ``index`` of a call and random ``stream`` (e.g. the restart),
    derived from the attack's ``seed`` by SplitMix64 mixing (independent of the batch)."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9 + (stream + 1) * 0x94D049BB133111EB) & _MASK64
    for mul in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB):
        z = ((z ^ (z >> 31)) * mul) & _MASK64
    return (z ^ (z >> 29)) & ((1 << 63) - 1)


def _score_from_loss(detector: Detector) -> Callable | None:
    """A map ``attack_loss -> score`` when the detector's score is an exact function of its
    attack objective (so acceptance needs no second forward), else ``None``.  A detector
    may declare one as ``_score_from_attack_loss``."""
    fn = getattr(detector, "_score_from_attack_loss", None)
    if callable(fn):
        return fn
    t = type(detector)
    if t._attack_loss is Detector._attack_loss and t.attack_loss is Detector.attack_loss:
        return torch.neg  # the default objective is -score
    from ..detectors.reject import RejectClass, RejectSum
    from ..detectors.score_fn import ScoreDetector

    if isinstance(detector, ScoreDetector) and detector.attack_loss_fn is None \
            and t._attack_loss is ScoreDetector._attack_loss and t._score is ScoreDetector._score:
        return torch.neg  # attack_loss = -score
    if t in (RejectClass, RejectSum):  # score = exp(-reject nll), computed the same way
        return lambda f: torch.exp(-f)
    return None


class BestOf:
    """Per-image best point of a call: the highest signed objective, or with a threshold the
    key ``(success, objective)``; updates on the full batch or on the rows ``idx``."""

    def __init__(self, f: torch.Tensor, x: torch.Tensor, succ: torch.Tensor | None) -> None:
        self.f, self.x, self.succ = f.clone(), x.clone(), None if succ is None else succ.clone()

    @staticmethod
    def better(f, succ, cur_f, cur_succ):
        if succ is None:
            return f > cur_f
        return (succ & ~cur_succ) | ((succ == cur_succ) & (f > cur_f))

    def update(self, f: torch.Tensor, x: torch.Tensor, succ: torch.Tensor | None,
               idx: torch.Tensor | None = None) -> None:
        view = (-1,) + (1,) * (x.dim() - 1)
        if idx is None:
            b = self.better(f, succ, self.f, self.succ)
            self.f = torch.where(b, f, self.f)
            self.x = torch.where(b.view(view), x, self.x)
            if succ is not None:
                self.succ = self.succ | succ
            return
        cur_f = self.f[idx]
        cur_s = None if succ is None else self.succ[idx]
        b = self.better(f, succ, cur_f, cur_s)
        self.f[idx] = torch.where(b, f, cur_f)
        self.x[idx] = torch.where(b.view(view), x, self.x[idx])
        if succ is not None:
            self.succ[idx] = cur_s | succ


class DetectorDecision(nn.Module):
    """A detector as a 2-way classifier, for torchattacks' label bookkeeping.

    ``forward(x) -> (B, 2)`` logits ``[score - threshold, threshold - score]``: the argmax is
    0 ("OOD", rejected) when ``score > threshold`` and 1 ("ID", accepted) otherwise.
    The detector is a submodule, so ``.eval()``/``.train()``/``.to()`` reach it and
    ``parameters()`` are the detector's.

    Args:
        detector: a :class:`~atom_plugin.detectors.base.Detector`.
        threshold: OOD-score threshold (accept as ID when ``score <= threshold``), e.g. the
            score at 95% TPR on in-distribution data; ``None`` until set.
    """

    def __init__(self, detector: Detector, threshold: float | None = None) -> None:
        super().__init__()
        if not isinstance(detector, Detector):
            raise TypeError(f"`detector` must be an atom_plugin Detector, got {type(detector).__name__}.")
        self.detector = detector
        self.threshold = None if threshold is None else check_float(threshold, "threshold")

    @classmethod
    def of(cls, detector: Detector) -> "DetectorDecision":
        """The decision module shared by every attack on ``detector`` (created once)."""
        dec = detector.__dict__.get(_DECISION_ATTR)
        if dec is None:
            dec = cls(detector)
            # Stored outside nn.Module's registry: not a submodule of the detector (no cycle
            # in modules()/state_dict()), but reachable so attacks on one detector share it.
            object.__setattr__(detector, _DECISION_ATTR, dec)
        return dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2)
        if self.threshold is None:
            raise ValueError(
                "The detector's decision `threshold` is not set: torchattacks.MultiAttack and "
                "Attack.save classify by argmax of get_logits, which for an OOD attack means "
                "'score > threshold' (OOD) vs. not (ID). Call attack.set_threshold(t) with t the "
                "score at 95% TPR on in-distribution data (labels: 0 = OOD input, 1 = ID input), "
                "or combine attacks with atom_plugin.attacks.OODMultiAttack, which needs no threshold."
            )
        s = self.detector._score(x)
        return torch.stack([s - self.threshold, self.threshold - s], dim=1)


def _resolve_detector(model: Any, objective: Callable | None, num_classes: int | None) -> DetectorDecision:
    if isinstance(model, DetectorDecision):
        if objective is not None:
            raise ValueError("`objective` must be None when `model` is a DetectorDecision (its detector "
                             "already defines the objective).")
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be an atom_plugin Detector, or an nn.Module together with `objective` "
            f"(a callable logits -> (B,)), got {type(model).__name__}."
        )
    from ..detectors import as_detector  # imported lazily: detectors may import attacks

    return DetectorDecision.of(as_detector(model, objective=objective, num_classes=num_classes))


def _module_modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


def _bn_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            out += [(b, b.detach().clone()) for b in m.buffers(recurse=False)]
    return out


class OODAttack(_TAAttack):
    """Base class of the OOD attacks (a real :class:`torchattacks.Attack`).

    Args:
        name: attack name (torchattacks convention).
        model: a :class:`~atom_plugin.detectors.base.Detector` (its ``attack_loss`` is the
            objective), a :class:`DetectorDecision`, or an ``nn.Module`` classifier together
            with ``objective``.
        objective: with a plain ``nn.Module``: a callable ``logits (B, K+R) -> (B,)`` that the
            attacker of an OOD input maximizes (e.g. ``atom_plugin.objectives.reject_nll``);
            turned into a detector by :func:`atom_plugin.detectors.as_detector`.
        num_classes: ``K`` for ``objective`` (passed to ``as_detector``).
        target: ``"ood"`` (maximize the objective: OOD inputs made to look ID) or ``"in"``
            (minimize it: ID inputs made to look OOD).
        seed: seed of a ``torch.Generator`` on the input's device used for random starts; the
            same seed gives the same output for the same input. ``None`` uses torch's global RNG.
        eps, alpha, steps, random_start, restarts, round_to_255: the L-inf threat model of
            gradient attacks (validated here; ``None`` for attacks without that parameter):
            ``eps >= 0``, ``alpha > 0``, ``steps >= 1``, ``restarts >= 1``.
        threshold: OOD-score threshold (finite float) or ``None``: with it, an image succeeds
            at ``score <= threshold`` (``target="in"``: ``>``) and success wins the best-of.
        early_stop: drop images that have succeeded (needs ``threshold``).

    After each call, ``last_objective`` ``(B,)`` holds ``detector.attack_loss`` at the
    returned images and ``last_clean_objective`` ``(B,)`` at the inputs (both detached,
    unsigned: for ``target="in"`` the attack lowered them).

    Model state: the detector runs in eval mode (or as set by ``set_model_training_mode``);
    the training flag of every submodule is restored exactly afterwards (also on error),
    BatchNorm running statistics never change, and gradients are taken with respect to the
    input only, so parameters' ``.grad`` are untouched.  Outputs follow the input's device
    and dtype.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        objective: Callable | None = None,
        num_classes: int | None = None,
        *,
        target: str = "ood",
        seed: int | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
        random_start: bool = False,
        restarts: int = 1,
        round_to_255: bool = False,
        threshold: float | None = None,
        early_stop: bool = False,
    ) -> None:
        decision = _resolve_detector(model, objective, num_classes)
        if next(decision.parameters(), None) is None:  # torchattacks prints when it finds no device
            with contextlib.redirect_stdout(io.StringIO()):
                super().__init__(name, decision)
        else:
            super().__init__(name, decision)
        self.target = check_choice(target, "target", ("ood", "in"))
        self.seed = None if seed is None else check_int(seed, "seed", low=0)
        self.eps = None if eps is None else check_float(eps, "eps", low=0.0, high=1.0)
        self.alpha = None if alpha is None else check_float(alpha, "alpha", low=0.0, low_open=True)
        self.steps = None if steps is None else check_int(steps, "steps", low=1)
        self.restarts = check_int(restarts, "restarts", low=1)
        if not isinstance(random_start, bool):
            raise TypeError(f"`random_start` must be a bool, got {type(random_start).__name__}.")
        if not isinstance(round_to_255, bool):
            raise TypeError(f"`round_to_255` must be a bool, got {type(round_to_255).__name__}.")
        if self.restarts > 1 and not random_start:
            raise ValueError(f"`restarts`={restarts} > 1 repeats the same deterministic run without a random "
                             "start; set random_start=True or restarts=1.")
        self.random_start = random_start
        self.round_to_255 = round_to_255
        self.threshold = None if threshold is None else check_float(threshold, "threshold")
        if not isinstance(early_stop, bool):
            raise TypeError(f"`early_stop` must be a bool, got {type(early_stop).__name__}.")
        if early_stop and self.threshold is None:
            raise ValueError("`early_stop=True` needs `threshold=` (the OOD-score threshold, e.g. the score at "
                             "95% TPR on in-distribution data): an image stops once it is accepted at it.")
        self.early_stop = early_stop
        self.eot_iter = 1  # expectation over transformation: gradient/value averaged over draws
        self._objective_fn: Callable | None = None  # a replacement objective (OODAutoAttack's margin)
        # image ids of the rows of the next call (per-image seeds), set by an ensemble that
        # attacks a subset of its batch; None: the row index
        self._image_ids: list | None = None
        self.supported_mode = ["default"]
        self._last_objective: torch.Tensor | None = None
        self._last_clean_objective: torch.Tensor | None = None
        self._last_success: torch.Tensor | None = None
        self._cost = {"forwards": 0, "backwards": 0}
        self._last_cost: dict | None = None

    # -- the detector and its decision threshold --------------------------------------
    @property
    def detector(self) -> Detector:
        """The attacked :class:`~atom_plugin.detectors.base.Detector`."""
        return self.model.detector

    @property
    def last_objective(self) -> torch.Tensor | None:
        """``detector.attack_loss`` ``(B,)`` at the images returned by the last call (detached)."""
        return self._last_objective

    @property
    def last_clean_objective(self) -> torch.Tensor | None:
        """``detector.attack_loss`` ``(B,)`` at the inputs of the last call (detached)."""
        return self._last_clean_objective

    @property
    def last_success(self) -> torch.Tensor | None:
        """``(B,)`` bool: the returned image succeeds at ``threshold`` (``None`` without one)."""
        return self._last_success

    @property
    def last_cost(self) -> dict | None:
        """``{"forwards": n, "backwards": m}`` of the last call, in images (a forward of a batch of
        8 counts 8); score-only attacks add ``"queries"``."""
        return None if self._last_cost is None else dict(self._last_cost)

    @property
    def sign(self) -> float:
        """+1 for ``target="ood"`` (maximize ``attack_loss``), -1 for ``target="in"``."""
        return 1.0 if self.target == "ood" else -1.0

    def set_threshold(self, threshold: float | None) -> "OODAttack":
        """Set the detector's OOD-score threshold used by ``get_logits`` (torchattacks
        ``MultiAttack``/``save``): inputs with ``score > threshold`` are class 0 (OOD).
        Shared by every attack on the same detector object.  Returns ``self``."""
        self.model.threshold = None if threshold is None else check_float(threshold, "threshold")
        return self

    # -- objective --------------------------------------------------------------------
    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """``detector.attack_loss`` ``(B,)`` at images ``x`` in [0, 1] (unsigned), through the
        detector's non-validating ``_attack_loss`` (inputs are validated once at entry)."""
        if self._normalization_applied is False:  # torchattacks' set_normalization_used path
            x = self.normalize(x)
        if self._objective_fn is not None:
            return self._objective_fn(x)
        return self.detector._attack_loss(x)

    def _signed_objective(self, x: torch.Tensor) -> torch.Tensor:
        return self.objective(x) * self.sign

    _NOT_DIFFERENTIABLE = (
        "The detector's attack_loss / `objective` is not differentiable with respect to the images "
        "(computed under torch.no_grad() or detached). Gradient attacks need a differentiable "
        "objective; use a black-box attack (e.g. CorruptionAttack) for this detector."
    )

    def _value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed objective ``(B,)`` and its gradient w.r.t. ``x`` only (no parameter .grad)."""
        x = x.detach().requires_grad_(True)
        f_sum, g_sum = None, None
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                f = self._signed_objective(x)
                if not f.requires_grad:  # a Python flag, no host-device sync
                    raise ValueError(self._NOT_DIFFERENTIABLE)
                (g,) = torch.autograd.grad(f.sum(), x, allow_unused=True)
            if g is None:
                g = torch.zeros_like(x)
            f_sum = f.detach() if f_sum is None else f_sum + f.detach()
            g_sum = g if g_sum is None else g_sum + g
        if self.eot_iter == 1:
            return f_sum, g_sum
        return f_sum / self.eot_iter, g_sum / self.eot_iter

    @torch.no_grad()
    def _value(self, x: torch.Tensor) -> torch.Tensor:
        f = self._signed_objective(x).detach()
        for _ in range(self.eot_iter - 1):
            f = f + self._signed_objective(x).detach()
        return f if self.eot_iter == 1 else f / self.eot_iter

    # -- threshold, success and cost ----------------------------------------------------
    def _raw_score(self, x: torch.Tensor) -> torch.Tensor:
        """``detector._score`` at images ``x`` (no autograd graph kept)."""
        if self._normalization_applied is False:
            x = self.normalize(x)
        if getattr(self.detector, "needs_input_grad", False):
            with torch.enable_grad():
                return self.detector._score(x.detach()).detach()
        with torch.no_grad():
            return self.detector._score(x).detach()

    def _success_of_score(self, s: torch.Tensor) -> torch.Tensor:
        return s <= self.threshold if self.target == "ood" else s > self.threshold

    def _success(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor | None:
        """Per-image success at ``threshold`` of images ``x`` whose signed objective is ``f``
        (``None`` without a threshold); one extra forward unless the detector's score is a
        known function of its objective."""
        if self.threshold is None:
            return None
        to_score = None if (self._objective_fn is not None or self.eot_iter > 1) else _score_from_loss(self.detector)
        if to_score is not None and self._normalization_applied is not False:
            s = to_score(f * self.sign)
        else:
            s = self._raw_score(x)
            self._cost["forwards"] += x.shape[0]
        return self._success_of_score(s)

    def _eval(self, x: torch.Tensor, with_grad: bool):
        """Signed objective, gradient (or ``None``) and success (or ``None``) at ``x``; counted."""
        self._cost["forwards"] += x.shape[0] * self.eot_iter
        if with_grad:
            self._cost["backwards"] += x.shape[0] * self.eot_iter
            f, g = self._value_and_grad(x)
        else:
            f, g = self._value(x), None
        return f, g, self._success(x, f)

    def _reset_cost(self) -> None:
        self._cost = {"forwards": 0, "backwards": 0}

    def _store_cost(self, **extra) -> None:
        self._last_cost = dict(self._cost, **extra)

    @staticmethod
    def _compact(active: list, idx: torch.Tensor, keep: torch.Tensor, *state):
        """Early stopping: keep the rows ``keep`` (bool (n,)) of the active image list (host),
        their indices ``idx`` and every per-image tensor of ``state`` (one host sync)."""
        keep_list = keep.tolist()
        active = [i for i, k in zip(active, keep_list) if k]
        sel = torch.nonzero(keep, as_tuple=True)[0]
        return (active, idx[sel]) + tuple(None if t is None else t[sel] for t in state)

    def _clean_objective(self, x: torch.Tensor, with_grad: bool = False):
        """Signed objective ``(B,)`` at the clean images, validated once (shape, NaN); with
        ``with_grad`` also its gradient w.r.t. ``x`` (and the objective must be differentiable)."""
        f, g = self._value_and_grad(x) if with_grad else (self._value(x), None)
        if not isinstance(f, torch.Tensor) or f.dim() != 1 or f.shape[0] != x.shape[0]:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"The detector's attack_loss / `objective` must return shape (B,) = ({x.shape[0]},), "
                             f"got {shape}.")
        check_scores(f, "objective at the clean images")
        return (f, g) if with_grad else f

    # -- random starts and the threat model -------------------------------------------
    def _generator(self, x: torch.Tensor) -> torch.Generator | None:
        if self.seed is None:
            return None
        g = torch.Generator(device=x.device)
        g.manual_seed(self.seed)
        return g

    def _random_start(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        return linf_random_start(x, self.eps, gen)

    def _image_uniform(self, x: torch.Tensor, active: list, stream: int, shape=None) -> torch.Tensor:
        """``U[0, 1)`` draws of shape ``(len(active), *shape)`` (default: an image's shape), row
        ``j`` from a generator seeded by :func:`image_seed` ``(seed, active[j], stream)``: an
        image's draws do not depend on the other images of the batch.  Without a seed, one
        draw from torch's global RNG."""
        shape = tuple(x.shape[1:]) if shape is None else tuple(shape)
        if self.seed is None:
            return torch.rand((len(active),) + shape, device=x.device, dtype=x.dtype)
        out = torch.empty((len(active),) + shape, device=x.device, dtype=x.dtype)
        g = torch.Generator(device=x.device)
        ids = self._image_ids
        for j, i in enumerate(active):
            g.manual_seed(image_seed(self.seed, i if ids is None else ids[i], stream))
            torch.rand(shape, generator=g, out=out[j])
        return out

    def _random_start_images(self, x: torch.Tensor, active: list, stream: int) -> torch.Tensor:
        """Uniform random start in the ball of each image of ``x`` (rows = ``active`` images),
        seeded per image."""
        u = self._image_uniform(x, active, stream)
        return (x + (2.0 * u - 1.0) * self.eps).clamp_(0.0, 1.0)

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Projection onto the L-inf ``eps``-ball around ``x`` intersected with [0, 1]."""
        return linf_project(x_adv, x, self.eps)

    def _round(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Round to multiples of 1/255 inside the eps-ball and [0, 1].  A pixel whose ball
        contains no multiple of 1/255 (only possible when ``x`` is not 8-bit and eps < 1/255)
        keeps its unrounded value."""
        lo = torch.ceil((x - self.eps).clamp(min=0.0) * 255.0 - 1e-4) / 255.0
        hi = torch.floor((x + self.eps).clamp(max=1.0) * 255.0 + 1e-4) / 255.0
        r = torch.min(torch.max(torch.round(x_adv * 255.0) / 255.0, lo), hi)
        r = torch.where(lo <= hi, r, x_adv)
        return self._project(r, x)  # moves a value by at most a float rounding error

    @staticmethod
    def _keep_best(f: torch.Tensor, x: torch.Tensor, best_f: torch.Tensor, best_x: torch.Tensor):
        """Per-sample best-of update without host-device sync (NaN never wins)."""
        better = f > best_f
        return torch.where(better, f, best_f), torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, best_x)

    def _finish(self, x: torch.Tensor, best_x: torch.Tensor, best_f: torch.Tensor,
                clean_f: torch.Tensor) -> torch.Tensor:
        """Optional 8-bit rounding (re-evaluated; the clean image wins if rounding made the
        candidate worse), then record ``last_objective``/``last_clean_objective``."""
        if self.round_to_255 and self.eps is not None:
            rx = self._round(best_x, x)
            rf = self._value(rx)
            self._cost["forwards"] += x.shape[0]
            best_f, best_x = self._keep_best(rf, rx, clean_f, x.clone())
        self._last_objective = (best_f * self.sign).detach()
        self._last_clean_objective = (clean_f * self.sign).detach()
        return best_x.detach()

    def _finish_best(self, x: torch.Tensor, best: BestOf, clean_f: torch.Tensor) -> torch.Tensor:
        """:meth:`_finish` for a :class:`BestOf`; records ``last_success`` and ``last_cost``."""
        out = self._finish(x, best.x, best.f, clean_f)
        if self.threshold is not None:
            if self.round_to_255 and self.eps is not None:  # rounding may change the decision
                self._last_success = self._success_of_score(self._raw_score(out))
            else:
                self._last_success = best.succ.clone()
        else:
            self._last_success = None
        self._store_cost()
        return out

    # -- entry ------------------------------------------------------------------------
    def _prepare(self, images: Any) -> torch.Tensor:
        """Validate the images once (after torchattacks' inverse normalization, if used)."""
        if self.normalization_used is not None and isinstance(images, torch.Tensor) and images.dim() == 4:
            # inverse normalization can leave values a rounding error outside [0, 1]
            lo, hi = torch.aminmax(images.detach())
            if float(lo) >= -1e-5 and float(hi) <= 1 + 1e-5:
                images = images.clamp(0.0, 1.0)
        check_images(images, "images")
        if not getattr(self.detector, "fitted", True):
            raise ValueError(f"The detector {type(self.detector).__name__} is not fitted; call "
                             "detector.fit(in_distribution_loader) before attacking it.")
        return images.detach().clone()

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        """Attack ``inputs`` ``(B, C, H, W)`` in [0, 1] (labels optional and ignored);
        returns adversarial images of the same shape, device and dtype."""
        modes = _module_modes(self.model)
        bn = _bn_buffers(self.model) if (self._model_training and self._batchnorm_training) else []
        try:
            return super().__call__(inputs, labels, *args, **kwargs)
        finally:
            for m, flag in modes:
                m.training = flag
            with torch.no_grad():
                for buf, saved in bn:
                    buf.copy_(saved)
