"""The detector contract shared by every attack, the evaluation and the trainers.

A :class:`Detector` is an ``nn.Module`` around a classifier that maps images
``(B, C, H, W)`` in ``[0, 1]`` to:

* ``score(x) -> (B,)``: the OOD score, **higher = more OOD**, differentiable in ``x``;
* ``attack_loss(x) -> (B,)``: the adaptive attack objective of the paper for this
  detector (ATOM paper, Appendix B.4).  An attacker **maximizes** it to make an OOD
  input look in-distribution; an attack on ID inputs (ALOE "In" attacks) minimizes it;
* ``classify(x) -> (B, K)``: in-distribution class logits (for accuracy and
  end-to-end accuracy);
* ``fit(loader)``: optional calibration on in-distribution data (Mahalanobis, ...).

``forward(x)`` is ``score(x)``, so a detector is also a plain score model.

Validated vs internal path
--------------------------
``score`` / ``attack_loss`` are the public entry points: the detectors in this package
check the images (``check_images``: rank 4, float, finite, in [0, 1]) and the output
(``check_scores``: no NaN) there, which synchronises host and device.  Code that calls
a detector many times in a loop (attacks, miners, trainers) validates its inputs once
at its own entry and then calls the non-validating ``_score(x)`` / ``_attack_loss(x)``,
which do the same computation with no checks and no host-device sync.  The defaults
below forward to the public methods, so a third-party subclass that only implements
``score`` (and maybe ``attack_loss``) still works on the internal path.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


class Detector(nn.Module):
    """Base class. Subclasses implement :meth:`score`; they override :meth:`attack_loss`
    when the paper's objective is not simply ``-score`` and :meth:`classify` when the
    classifier is not ``self.model``'s first ``num_classes`` logits."""

    #: True once :meth:`fit` has run, or when the detector needs no fitting.
    fitted: bool = True

    def __init__(self, model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes

    # -- the contract -------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """OOD score ``(B,)`` of images ``(B, C, H, W)`` in [0, 1]; higher = more OOD."""
        raise NotImplementedError

    def attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample objective ``(B,)`` an attacker maximizes to make ``x`` look
        in-distribution.  Default: ``-score(x)``."""
        return -self.score(x)

    # -- internal, non-validating path (used inside attack / training loops) ---------
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        """``score(x)`` without input/output checks; subclasses that validate in
        :meth:`score` override this with the bare computation."""
        return self.score(x)

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``attack_loss(x)`` without input/output checks (see :meth:`_score`)."""
        return self.attack_loss(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """In-distribution class logits ``(B, K)``."""
        if self.model is None:
            raise NotImplementedError(f"{type(self).__name__} has no classifier; pass `model`.")
        logits = self.model(x)
        return logits[:, : self.num_classes] if self.num_classes is not None else logits

    def fit(self, loader: Iterable, **kwargs) -> "Detector":
        """Calibrate on in-distribution data; a no-op for detectors that need none."""
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``score(x)`` without gradients (pytorch-ood style)."""
        return self.score(x)
