"""Adapt any score function (e.g. a pytorch-ood detector, an OpenOOD confidence) to the contract."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .base import Detector

__all__ = ["ScoreDetector"]


class ScoreDetector(Detector):
    """Wrap ``score_fn: images (B, C, H, W) in [0, 1] -> (B,)``.

    Args:
        score_fn: a differentiable callable.  For a pytorch-ood detector pass its
            ``predict`` (pytorch-ood detectors return *outlier* scores, higher = more OOD,
            which is our convention, so no sign flip), or, for logit-based pytorch-ood
            detectors, ``lambda x: det.predict_logits(model(x))``.  It must not run under
            ``torch.no_grad`` or attacks get no gradient (the attacks then refuse it with a
            clear error).  If it is an ``nn.Module`` it is
            registered as a submodule (so ``.eval()`` / ``.to()`` reach it).
        model: the classifier, optional; needed only for :meth:`classify`.
        num_classes: ``K`` for :meth:`classify` (default from ``head_spec(model)``).
        attack_loss_fn: ``images -> (B,)`` the attacker maximizes; default ``-score_fn``.
        needs_input_grad: ``score_fn`` itself differentiates w.r.t. its input (ODIN-style
            preprocessing), so the evaluation must not call it under ``torch.no_grad``.
        higher_is_ood: ``True`` (default) if ``score_fn`` returns OOD scores; ``False`` if it
            returns confidences (higher = more in-distribution, e.g. OpenOOD's ``conf`` or a
            max softmax probability): the detector then reports ``-score_fn(x)``.
        differentiable: ``False`` declares ``score_fn`` black-box (no useful input gradient):
            gradient attacks refuse the detector and ``evaluate`` uses a score-only attack.
    """

    def __init__(
        self,
        score_fn: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module | None = None,
        num_classes: int | None = None,
        attack_loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        needs_input_grad: bool = False,
        higher_is_ood: bool = True,
        differentiable: bool = True,
    ) -> None:
        if not callable(score_fn):
            raise TypeError(f"`score_fn` must be a callable images -> (B,), got {type(score_fn).__name__}.")
        if attack_loss_fn is not None and not callable(attack_loss_fn):
            raise TypeError(f"`attack_loss_fn` must be a callable images -> (B,), got {type(attack_loss_fn).__name__}.")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module or None, got {type(model).__name__}.")
        super().__init__(model, num_classes)
        self.score_fn = score_fn  # an nn.Module score_fn becomes a submodule
        if isinstance(score_fn, nn.Module):
            score_fn.eval()  # the mode rule (see detectors.base)
        self.attack_loss_fn = attack_loss_fn
        self.needs_input_grad = bool(needs_input_grad)
        if not isinstance(higher_is_ood, bool):
            raise TypeError(f"`higher_is_ood` must be True (OOD scores) or False (confidences), got {higher_is_ood!r}.")
        self.higher_is_ood = higher_is_ood
        self.differentiable = bool(differentiable)

    @staticmethod
    def _check_out(out, x: torch.Tensor, name: str) -> torch.Tensor:
        # shape only (no NaN check, which would sync): this runs inside attack loops too
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"`{name}` must return one score per image, shape ({x.shape[0]},), got {shape}; "
                             "reduce per-pixel or per-class outputs to one value per image.")
        return out

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        if self.needs_input_grad and not torch.is_grad_enabled():
            # the score differentiates w.r.t. its input (ODIN-style preprocessing): give it
            # autograd even when called under no_grad / inference_mode (e.g. by a black-box attack)
            with torch.inference_mode(False), torch.enable_grad():
                s = self._check_out(self.score_fn(x.clone()), x, "score_fn").detach()
        else:
            s = self._check_out(self.score_fn(x), x, "score_fn")
        return s if self.higher_is_ood else -s

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.attack_loss_fn is None:
            return -self._score(x)
        return self._check_out(self.attack_loss_fn(x), x, "attack_loss_fn")

