"""The one detector contract shared by every attack, the evaluation and the trainers.

A :class:`Detector` is an ``nn.Module`` around a classifier that maps images
``(B, C, H, W)`` in ``[0, 1]`` to:

* ``score(x) -> (B,)``: the OOD score, **higher = more OOD**;
* ``attack_loss(x) -> (B,)``: the adaptive attack objective of the paper for this
  detector (ATOM paper, Appendix B.4).  An attacker **maximizes** it to make an OOD
  input look in-distribution; an attack on ID inputs (ALOE "In" attacks) minimizes it;
* ``classify(x) -> (B, K)``: in-distribution class logits (accuracy, end-to-end accuracy);
* ``fit(loader)``: calibration on in-distribution data (Mahalanobis, KNN, ViM, ...).

Template method
---------------
``score`` / ``attack_loss`` / ``classify`` are public and **validate** (images: rank 4,
float, finite, in [0, 1]; the detector is fitted; output: shape ``(B,)``, no NaN), then
call the bare computations ``_score`` / ``_attack_loss`` / ``_classify`` that subclasses
implement.  Code that calls a detector many times in a loop (attacks, miners, trainers,
the evaluation) validates once at its own entry and then calls the bare methods, which
do no checks and no host-device sync.

Class attributes a subclass sets (read by the registry, the attacks and ``evaluate``):

* ``requires_fit``: ``fit`` must run before scoring (``fitted`` tracks it);
* ``differentiable``: ``_attack_loss`` has a useful input gradient.  ``False`` means
  black-box only: gradient attacks refuse it and ``evaluate`` uses a score-only attack;
* ``needs_input_grad``: ``_score`` itself takes an input gradient (ODIN-style input
  preprocessing), so it cannot run under ``torch.no_grad``.

Mode rule: building a detector puts it (and its model) in eval mode; scores never use
batch statistics unless ``detector.train()`` is called on purpose.  ``evaluate`` and
the attacks run in eval mode and restore every module's own mode afterwards.

Third-party detectors (pytorch-ood, OpenOOD, a bare score function) come in through the
adapters in :mod:`atom_plugin.detectors.adapters` and :class:`ScoreDetector`, not by
subclassing.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from .._validation import check_images, check_scores
from ..models import head_spec

__all__ = ["Detector", "NotFittedError", "CheckedDetector"]


class NotFittedError(ValueError, AttributeError):
    """The detector needs :meth:`Detector.fit` on in-distribution data before scoring."""


class Detector(nn.Module):
    """Base class of every detector.  Subclasses implement :meth:`_score`, and
    :meth:`_attack_loss` when the paper's objective is not ``-score``.

    Args:
        model: the classifier (images in [0, 1] -> logits ``(B, K + R)``), or ``None`` for
            detectors that have no classifier (then :meth:`classify` is unavailable).
        num_classes: ``K`` (default: from :func:`atom_plugin.models.head_spec`).

    Attributes: ``model``, ``num_classes`` (K), ``num_reject`` (R).
    """

    requires_fit: bool = False
    differentiable: bool = True
    needs_input_grad: bool = False

    def __init__(self, model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(
                f"`model` must be an nn.Module mapping images in [0, 1] to logits, got {type(model).__name__}."
            )
        if model is not None:
            k, r = head_spec(model, num_classes)
        else:
            k, r = num_classes, 0
        self.model = model
        self.num_classes = k
        self.num_reject = r
        self.fitted = not self.requires_fit
        # The mode rule: a detector scores with the model in eval mode (BatchNorm running
        # statistics, no dropout), so a score never depends on the rest of the batch.
        # Building a detector therefore puts it and its model in eval mode; call
        # detector.train() to score with batch statistics on purpose.
        self.eval()

    # -- public, validating ----------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """OOD score ``(B,)`` of images ``x`` ``(B, C, H, W)`` in [0, 1]; higher = more OOD."""
        self.check_ready()
        check_images(x, "x")
        return self._check_output(self._score(x), x, "score(x)")

    def attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Adaptive attack objective ``(B,)``; an attacker maximizes it to make ``x`` look ID."""
        self.check_ready()
        check_images(x, "x")
        return self._check_output(self._attack_loss(x), x, "attack_loss(x)")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """In-distribution class logits ``(B, K)``."""
        check_images(x, "x")
        return self._classify(x)

    def fit(self, loader: Iterable, **kwargs) -> "Detector":
        """Calibrate on in-distribution data; a no-op for detectors that need none."""
        return self

    def check_ready(self) -> None:
        """Raise :class:`NotFittedError` if the detector needs :meth:`fit` first."""
        if not self.fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted; call .fit(id_loader) on in-distribution "
                "training data first."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``score(x)`` without gradients (pytorch-ood style)."""
        return self.score(x)

    # -- bare computations (no checks; used inside loops) ------------------------------
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """The bare OOD score.  Subclasses implement it.  (A legacy subclass that
        overrides :meth:`score` instead is supported: its ``score`` is called.)"""
        if type(self).score is not Detector.score:
            return self.score(x)
        raise NotImplementedError(f"{type(self).__name__} must implement _score(x).")

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The bare attack objective; default ``-_score(x)``."""
        if type(self).attack_loss is not Detector.attack_loss:
            return self.attack_loss(x)
        return -self._score(x)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """The bare class logits: ``model(x)[:, :K]``."""
        if self.model is None:
            raise NotImplementedError(f"{type(self).__name__} has no classifier; pass `model` to use classify().")
        logits = self.model(x)
        return logits[:, : self.num_classes] if self.num_classes is not None else logits

    @staticmethod
    def _check_output(out, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{what} must return one value per image, shape ({x.shape[0]},), got {shape}.")
        return check_scores(out, what)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_reject={self.num_reject}"


#: Deprecated alias kept for code written against the 0.1 API (the two bases are one now).
CheckedDetector = Detector
