"""Clear errors where stock torchattacks code meets OOD detectors.

torchattacks treats its ``model`` as a classifier and needs labels.  Two stock uses fail
deep inside torchattacks with an unrelated message; :func:`install` (run on import of
:mod:`atom_plugin.attacks`) makes each fail at once with a sentence that names the fix.
Nothing else in torchattacks changes:

* ``torchattacks.PGD(detector)`` (any stock attack built on an atom_plugin ``Detector``):
  the detector returns OOD scores ``(B,)``, not class logits, so a cross-entropy attack on
  it is meaningless -> ``TypeError`` pointing at ``OODPGD`` (or at ``detector.model`` to
  attack the classifier itself);
* ``torchattacks.MultiAttack([ood_attacks...])(x)`` without labels -> ``ValueError``
  pointing at :class:`atom_plugin.attacks.OODMultiAttack`, which needs none (with labels,
  ``0`` = OOD and ``1`` = ID, and a threshold set, the stock class works).
"""
from __future__ import annotations

import functools

__all__ = ["install"]

_MARK = "_atom_plugin_interop"


def install() -> None:
    """Wrap ``torchattacks.attack.Attack.__init__`` and ``MultiAttack.forward`` once (idempotent)."""
    import torchattacks
    from torchattacks.attack import Attack

    if not getattr(Attack.__init__, _MARK, False):
        Attack.__init__ = _checked_init(Attack.__init__)
    multi = torchattacks.MultiAttack
    if not getattr(multi.forward, _MARK, False):
        multi.forward = _checked_multi_forward(multi.forward)


def _checked_init(init):
    @functools.wraps(init)
    def __init__(self, name, model, *args, **kwargs):
        from ..detectors.base import Detector
        from .base import OODAttack

        if isinstance(model, Detector) and not isinstance(self, OODAttack):
            raise TypeError(
                f"torchattacks.{type(self).__name__} attacks a classifier's cross-entropy, but `model` is an "
                f"atom_plugin detector ({type(model).__name__}), whose output is one OOD score per image. Use "
                "the OOD attacks (atom_plugin.OODPGD / OODAPGD / OODFGSM / OODSquare(detector)), or pass "
                "detector.model to attack the classifier itself."
            )
        return init(self, name, model, *args, **kwargs)

    setattr(__init__, _MARK, True)
    return __init__


def _checked_multi_forward(forward):
    @functools.wraps(forward)
    def forward_(self, images, labels=None, *args, **kwargs):
        from .base import OODAttack

        if labels is None and any(isinstance(a, OODAttack) for a in getattr(self, "attacks", ())):
            raise ValueError(
                "torchattacks.MultiAttack needs labels to decide which attack succeeded; for OOD attacks use "
                "atom_plugin.OODMultiAttack([...]) (no labels, keeps the per-image best), or pass labels "
                "(0 = OOD, 1 = ID) after attack.set_threshold(t)."
            )
        return forward(self, images, labels, *args, **kwargs)

    setattr(forward_, _MARK, True)
    return forward_
