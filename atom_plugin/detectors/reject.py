"""Reject-class detectors: one reject class (ATOM / NTOM / ROWL, a K+1 model) and a
sum over several reject classes (SOFL)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .._validation import check_int
from ..models import unwrap_model
from ..objectives import reject_nll, reject_sum_nll
from .base import Detector
from .registry import register_detector

__all__ = ["RejectClass", "RejectSum"]


@register_detector("reject", head="k+1", help="K+1 model: softmax of the reject class (ATOM, NTOM, ROWL)")
class RejectClass(Detector):
    """K+1 model: ``score(x) = softmax(z)[:, K]`` (the reject class, zero-based index K;
    the paper's ``F(x)_{K+1}``), ``attack_loss(x) = reject_nll(z, K) = -log softmax(z)[:, K]``
    (paper eq. 118).

    Args:
        model: a (K+1)-way classifier, e.g. from
            ``atom_plugin.models.with_reject_head(model, K)``.
        num_classes: ``K`` (default: ``model.ood_num_classes``).

    Raises ``ValueError`` if the model does not have exactly one reject class.
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        if self.num_reject != 1:
            raise ValueError(
                f"RejectClass needs a (K+1)-way model, but `model` has K={self.num_classes} classes and "
                f"R={self.num_reject} reject classes. Give a K-way model a reject class with "
                f"atom_plugin.models.with_reject_head(model, {self.num_classes}) (then train it), pass the "
                "right `num_classes`, use MSP for a plain classifier, or RejectSum for R > 1."
            )

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-reject_nll(self.model(x), self.num_classes))

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        return reject_nll(self.model(x), self.num_classes)


@register_detector("sofl", head="k+r", help="K+R model: summed reject-class softmax (SOFL)")
class RejectSum(Detector):
    """K+R model (SOFL): ``score(x) = sum_{i>=K} softmax(z)_i`` (total reject probability),
    ``attack_loss(x) = reject_sum_nll(z, K)`` (paper eq. 117).

    Args:
        model: a (K+R)-way classifier with ``R >= 1``, e.g.
            ``with_reject_head(model, K, num_reject=5)``.
        num_classes: ``K`` (default: ``model.ood_num_classes``).
        num_reject: ``R`` (default: ``model.ood_num_reject``).  ``R`` is never guessed as
            "all outputs after K": a model without ``ood_num_reject`` needs ``num_reject``,
            and ``K + R`` must equal its number of outputs.
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None, num_reject: int | None = None) -> None:
        super().__init__(model, num_classes)
        recorded = getattr(model, "ood_num_reject", None)
        if recorded is None:
            recorded = getattr(unwrap_model(model), "ood_num_reject", None)
        if num_reject is not None:
            check_int(num_reject, "num_reject", low=1)
            if num_reject != self.num_reject:
                raise ValueError(
                    f"`num_reject`={num_reject} does not fit the model: it has {self.num_classes + self.num_reject} "
                    f"outputs, so K={self.num_classes} leaves R={self.num_reject}; pass matching num_classes and "
                    "num_reject."
                )
        elif num_classes is not None and recorded is None and self.num_reject >= 1:
            raise ValueError(
                f"RejectSum(model, num_classes={self.num_classes}) on a model with "
                f"{self.num_classes + self.num_reject} outputs would read R={self.num_reject} reject classes from "
                f"the output count alone; pass num_reject={self.num_reject} to confirm, or build the model with "
                f"atom_plugin.models.with_reject_head(model, K, num_reject=R) (it records R)."
            )
        elif recorded is not None and int(recorded) != self.num_reject:
            raise ValueError(
                f"`num_classes`={self.num_classes} leaves R={self.num_reject} reject classes, but the model records "
                f"ood_num_reject={int(recorded)} (K={getattr(model, 'ood_num_classes', '?')}); pass the model's K "
                "or omit num_classes."
            )
        if self.num_reject < 1:
            raise ValueError(
                f"RejectSum needs reject classes, but `model` has K={self.num_classes} classes and none "
                f"after them. Add them with atom_plugin.models.with_reject_head(model, {self.num_classes}, "
                "num_reject=R) (then train), or pass the right `num_classes`."
            )

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-reject_sum_nll(self.model(x), self.num_classes))

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        return reject_sum_nll(self.model(x), self.num_classes)
