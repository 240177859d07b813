"""Import-time workarounds for known-broken combinations of the dependency stack.

Imported by :mod:`atom_plugin` before anything that touches torchvision, timm or
robustbench.  Every fix here is applied only when the exact failure it targets is
observed; on a healthy install this module changes nothing.

Fixes
-----
1. ``torchvision`` wheels whose compiled ops link CUDA libraries fail to import next
   to a CPU-only ``torch`` with ``RuntimeError: operator torchvision::nms does not
   exist``.  Defining the ``nms``/``qnms`` schemas lets the pure-Python parts
   (transforms, ``torchvision.ops.misc``: all that timm and robustbench use) import.
   Calling ``torchvision.ops.nms`` then still fails, loudly.
2. robustbench 1.1.1 does ``from autoattack import AutoAttack`` while its dependency
   ``pyautoattack`` installs the module under the name ``pyautoattack``.
"""
from __future__ import annotations

import importlib
import sys

import torch

_NMS_ERROR = "operator torchvision::nms does not exist"
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
#: Holds the torch.library fragment alive; a collected Library drops its schemas.
_TORCHVISION_FRAGMENT = None
#: What this module changed, for bug reports: a tuple of short descriptions.
APPLIED: list[str] = []


def _purge(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def patch_torchvision() -> None:
    """Import torchvision; define the missing op schemas only on the known error."""
    global _TORCHVISION_FRAGMENT
    try:
        importlib.import_module("torchvision")
        return
    except ModuleNotFoundError:
        return  # torchvision is not installed: nothing to patch.
    except RuntimeError as err:
        if _NMS_ERROR not in str(err):
            raise
    _purge("torchvision")
    frag = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_SCHEMAS:
        frag.define(schema)
    _TORCHVISION_FRAGMENT = frag
    importlib.import_module("torchvision")
    APPLIED.append("torchvision: defined nms/qnms schemas (CUDA-linked ops beside CPU torch)")


def patch_autoattack() -> None:
    """Alias ``pyautoattack`` as ``autoattack`` when only the former is installed."""
    if "autoattack" in sys.modules:
        return
    try:
        importlib.import_module("autoattack")
        return
    except ModuleNotFoundError:
        pass
    try:
        module = importlib.import_module("pyautoattack")
    except ModuleNotFoundError:
        return
    sys.modules["autoattack"] = module
    APPLIED.append("autoattack: aliased to pyautoattack")


def apply() -> None:
    """Apply every fix whose trigger is present. Idempotent."""
    patch_torchvision()
    patch_autoattack()


apply()
