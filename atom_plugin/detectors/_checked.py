"""A :class:`Detector` base that validates at the public entry points.

``score(x)`` / ``attack_loss(x)`` / ``classify(x)`` check the images and the output;
subclasses implement the bare computations ``_score(x)`` and (when the paper's attack
objective is not ``-score``) ``_attack_loss(x)``, which attacks call inside their loops.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._validation import check_images, check_scores
from ..models import head_spec
from .base import Detector

__all__ = ["CheckedDetector"]


class CheckedDetector(Detector):
    """Detector around a classifier ``model`` with ``K`` in-distribution classes and ``R``
    reject classes, ``(K, R) = head_spec(model, num_classes)``.

    Attributes: ``model``, ``num_classes`` (K), ``num_reject`` (R).
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"`model` must be an nn.Module mapping images in [0, 1] to logits, got {type(model).__name__}."
            )
        k, r = head_spec(model, num_classes)
        super().__init__(model, k)
        self.num_reject = r

    # public, validating --------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """OOD score ``(B,)`` (higher = more OOD) of images ``x`` ``(B, C, H, W)`` in [0, 1]."""
        check_images(x, "x")
        return check_scores(self._score(x), f"{type(self).__name__}.score(x)")

    def attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Adaptive attack objective ``(B,)``; an attacker maximizes it to make ``x`` look ID."""
        check_images(x, "x")
        return check_scores(self._attack_loss(x), f"{type(self).__name__}.attack_loss(x)")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """In-distribution class logits ``(B, K)``."""
        check_images(x, "x")
        return self.model(x)[:, : self.num_classes]

    # internal, non-validating -----------------------------------------------------------
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _score(x).")

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self._score(x)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_reject={self.num_reject}"
