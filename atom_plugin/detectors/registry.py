"""The detector registry: ``register_detector`` / ``create_detector`` / ``list_detectors``.

Every built-in detector registers itself where it is defined::

    @register_detector("msp", head="any")
    class MSP(Detector): ...

and the CLI (``--detector``), ``atom-ood bench``, the contract tests and the docs read this
table.  Metadata of an entry (``detector_info(name)``):

* ``needs_fit``: ``fit(loader)`` on ID training data must run first (taken from the
  class's ``requires_fit``);
* ``head``: what the model's head must be: ``"any"`` (K-way, reject columns ignored),
  ``"k+1"`` (exactly one reject class), ``"k+r"`` (one or more reject classes);
* ``differentiable``: the attack objective has an input gradient (else black-box only).
"""
from __future__ import annotations

from typing import Any, Callable, List

import torch.nn as nn

from ..registry import Entry, Registry

__all__ = ["DETECTORS", "register_detector", "create_detector", "list_detectors", "detector_info"]

DETECTORS = Registry("detector")
_HEADS = ("any", "k+1", "k+r")


def register_detector(name: str, *, head: str = "any", help: str | None = None, **meta: Any) -> Callable:
    """Class decorator: register a :class:`~atom_plugin.detectors.Detector` subclass (or a
    factory ``(model, num_classes=None, **kw) -> Detector``) under ``name``."""
    if head not in _HEADS:
        raise ValueError(f"`head` must be one of {_HEADS}, got {head!r}.")

    def deco(cls):
        DETECTORS.register(name, cls, help=help, head=head,
                           needs_fit=bool(meta.pop("needs_fit", getattr(cls, "requires_fit", False))),
                           differentiable=bool(meta.pop("differentiable", getattr(cls, "differentiable", True))),
                           **meta)
        return cls

    return deco


def create_detector(name: str, model: nn.Module, num_classes: int | None = None, fit_loader: Any = None,
                    fit_kwargs: dict | None = None, **kwargs: Any):
    """Build the detector ``name`` on ``model`` (``K = num_classes``, default from the model);
    if it needs fitting, fit it on ``fit_loader`` (ID training data), else refuse."""
    entry = DETECTORS.get(name)
    det = entry.builder(model, num_classes=num_classes, **kwargs)
    if entry.needs_fit:
        if fit_loader is None:
            raise ValueError(f"detector {name!r} must be fitted on in-distribution training data: pass "
                             "`fit_loader` (a DataLoader of (x, y)), or build it and call .fit(loader) yourself.")
        det.fit(fit_loader, **(fit_kwargs or {}))
    return det


def list_detectors(needs_fit: bool | None = None, head: str | None = None) -> List[str]:
    """Registered detector names, optionally filtered by ``needs_fit`` / ``head``."""
    out = []
    for n in DETECTORS.names():
        e = DETECTORS.get(n)
        if needs_fit is not None and e.needs_fit != needs_fit:
            continue
        if head is not None and e.head != head:
            continue
        out.append(n)
    return out


def detector_info(name: str) -> Entry:
    """The registry entry of ``name`` (``.builder``, ``.help``, ``.needs_fit``, ``.head``, ...)."""
    return DETECTORS.get(name)
