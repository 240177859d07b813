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

   **Import order.**  When atom_plugin is imported first, :func:`patch_torchvision`
   applies the fix.  When timm / torchvision / pytorch_ood is imported first, the fix
   comes from the import hook ``_atom_plugin_import_hook`` (a top-level module that
   ``atom_plugin_import_hook.pth`` loads at interpreter start; a wheel install puts
   both in site-packages, :func:`install_import_hook` does it for editable installs).
   The hook only adds a finder that ignores every module but ``torchvision``.
2. robustbench 1.1.1 does ``from autoattack import AutoAttack`` while its dependency
   ``pyautoattack`` installs the module under the name ``pyautoattack``.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys

_NMS_ERROR = "operator torchvision::nms does not exist"
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
#: Holds the torch.library fragment alive; a collected Library drops its schemas.
_TORCHVISION_FRAGMENT = None
#: What this module changed, for bug reports: a tuple of short descriptions.
APPLIED: list[str] = []

HOOK_MODULE = "_atom_plugin_import_hook"
HOOK_PTH = "atom_plugin_import_hook.pth"
#: The .pth line: a guarded import, so a removed hook module never breaks interpreter start-up.
HOOK_PTH_LINE = ('import sys; exec("try:\\n import _atom_plugin_import_hook\\nexcept Exception:\\n pass")'
                 "  # atom_plugin: torchvision import-order fix\n")


class MissingDependencyError(ImportError, ValueError):
    """An optional dependency is missing or unusable (an ``ImportError`` that the CLI
    reports as an input error, exit code 2)."""


def _purge(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def patch_torchvision() -> None:
    """Import torchvision; define the missing op schemas only on the known error."""
    global _TORCHVISION_FRAGMENT
    hook = sys.modules.get(HOOK_MODULE)
    try:
        importlib.import_module("torchvision")
        return
    except ModuleNotFoundError:
        return  # torchvision is not installed: nothing to patch.
    except RuntimeError as err:
        if _NMS_ERROR not in str(err):
            raise
    import torch

    _purge("torchvision")
    if hook is not None and hasattr(hook, "define_torchvision_schemas"):
        _TORCHVISION_FRAGMENT = hook.define_torchvision_schemas()
    else:
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


def import_hook_installed() -> bool:
    """Whether the import-order hook was loaded at interpreter start-up."""
    return HOOK_MODULE in sys.modules


def install_import_hook(site_dir: str | None = None) -> str:
    """Install the import-order hook into ``site_dir`` (default: this environment's
    site-packages) and return the ``.pth`` path.

    A regular ``pip install`` already does this; editable (``pip install -e``) installs
    and copied environments need this call once.  Writes ``atom_plugin_import_hook.pth``
    and, unless it is importable already, a copy of ``_atom_plugin_import_hook.py``.
    Takes effect in new interpreters.
    """
    import sysconfig

    site_dir = os.fspath(site_dir) if site_dir is not None else sysconfig.get_paths()["purelib"]
    if not os.path.isdir(site_dir):
        raise FileNotFoundError(f"`site_dir` {site_dir!r} is not a directory.")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(here, HOOK_MODULE + ".py")
    target = os.path.join(site_dir, HOOK_MODULE + ".py")
    if os.path.abspath(src) != os.path.abspath(target):
        if not os.path.isfile(src):
            spec = importlib.util.find_spec(HOOK_MODULE)
            src = spec.origin if spec is not None else src
        if not os.path.isfile(src):
            raise FileNotFoundError(f"the hook module {HOOK_MODULE}.py was not found next to atom_plugin ({here}).")
        shutil.copyfile(src, target)
        import py_compile

        try:  # a cached .pyc keeps the start-up cost at a fraction of a millisecond
            py_compile.compile(target, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass
    pth = os.path.join(site_dir, HOOK_PTH)
    with open(pth, "w") as f:
        f.write(HOOK_PTH_LINE)
    return pth


def apply() -> None:
    """Apply every fix whose trigger is present. Idempotent."""
    patch_torchvision()
    patch_autoattack()
    hook = sys.modules.get(HOOK_MODULE)
    for msg in getattr(hook, "APPLIED", ()):  # what the import hook did before atom_plugin was imported
        if msg + " [import hook]" not in APPLIED:
            APPLIED.append(msg + " [import hook]")


import importlib.util  # noqa: E402

apply()
