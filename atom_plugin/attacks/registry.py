"""The attack registry: ``register_attack`` / ``create_attack`` / ``list_attacks``.

An entry maps a name to a class (or factory) ``(detector, **kwargs) -> attack``; its
metadata says what the attack needs:

* ``threat``: ``"linf"`` (an L∞ ball of radius ``eps``), ``"corruption"`` (the corruption
  set), ``"compositional"`` (corruption then L∞);
* ``gradient``: ``True`` for white-box attacks (need a differentiable detector objective),
  ``False`` for score-only (black-box) attacks.

``evaluate`` builds the attack of each task from its config by name through this table
(``EvalConfig(linf_attack="apgd")``), and ``atom-ood eval --attack`` lists its names.
"""
from __future__ import annotations

from typing import Any, Callable, List

from ..registry import Entry, Registry

__all__ = ["ATTACKS", "register_attack", "create_attack", "list_attacks", "attack_info"]

ATTACKS = Registry("attack")
_THREATS = ("linf", "corruption", "compositional")


def register_attack(name: str, *, threat: str = "linf", gradient: bool = True, help: str | None = None,
                    **meta: Any) -> Callable:
    """Class decorator: register an attack class under ``name``."""
    if threat not in _THREATS:
        raise ValueError(f"`threat` must be one of {_THREATS}, got {threat!r}.")

    def deco(cls):
        ATTACKS.register(name, cls, help=help, threat=threat, gradient=bool(gradient), **meta)
        return cls

    return deco


def create_attack(name: str, detector: Any, **kwargs: Any):
    """Build the registered attack ``name`` on ``detector``."""
    return ATTACKS.create(name, detector, **kwargs)


def list_attacks(threat: str | None = None, gradient: bool | None = None) -> List[str]:
    """Registered attack names, optionally filtered by ``threat`` / ``gradient``."""
    return [n for n in ATTACKS.names()
            if (threat is None or ATTACKS.get(n).threat == threat)
            and (gradient is None or ATTACKS.get(n).gradient == gradient)]


def attack_info(name: str) -> Entry:
    """The registry entry of ``name`` (``.builder``, ``.help``, ``.threat``, ``.gradient``)."""
    return ATTACKS.get(name)
