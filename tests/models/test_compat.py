"""Import compatibility fixes (atom_plugin._compat).

The scenarios run ``_compat.py`` in fresh interpreters with fake ``torchvision`` /
``autoattack`` packages first on ``sys.path``.  The broken fake fails exactly as the real
CUDA-linked torchvision does beside a CPU torch: ``torch.library.register_fake`` on the
undefined ``torchvision::nms`` raises ``RuntimeError: operator torchvision::nms does not exist``.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

import atom_plugin  # noqa: F401
from atom_plugin import _compat

COMPAT_FILE = _compat.__file__

BROKEN_TORCHVISION = """
import torch

@torch.library.register_fake("torchvision::nms")
def _nms_fake(dets, scores, iou_threshold):
    return dets.new_empty(0, dtype=torch.long)

WORKS = True
"""

# One fresh interpreter walks through three installs in turn (a fresh interpreter costs
# seconds: torch import).  _compat.py is loaded on its own, not through atom_plugin/__init__.
SCENARIOS = f"""
import importlib, importlib.util, sys
import torch

def use(path):
    for name in ("torchvision", "autoattack", "pyautoattack"):
        sys.modules.pop(name, None)
    sys.path[0] = path
    importlib.invalidate_caches()

# 1. torchvision fails for an unrelated reason: the error propagates unchanged.
sys.path.insert(0, "")
use(sys.argv[1])
spec = importlib.util.spec_from_file_location("compat_under_test", {COMPAT_FILE!r})
compat = importlib.util.module_from_spec(spec)
try:
    spec.loader.exec_module(compat)  # runs apply() at import, like atom_plugin does
    print("1 NOT RAISED")
except RuntimeError as err:
    print("1 RERAISED", err, compat.APPLIED)

# 2. healthy torchvision and a genuine autoattack: nothing is touched.
use(sys.argv[2])
compat.apply()
import torchvision, autoattack
try:
    torch.ops.torchvision.nms.default
    schema = "defined"
except (AttributeError, RuntimeError):
    schema = "absent"
print("2", compat.APPLIED, torchvision.WORKS, schema, autoattack.AutoAttack)

# 3. the CUDA-linked torchvision beside CPU torch, and only pyautoattack installed.
use(sys.argv[3])
compat.apply()
import torchvision, autoattack
print("3", compat.APPLIED, torchvision.WORKS)
print("3 SCHEMA", torch.ops.torchvision.nms.default._schema)
print("3 ALIAS", autoattack is sys.modules["pyautoattack"], autoattack.AutoAttack)
compat.apply()  # idempotent: no duplicate schema definition, nothing added
print("3 AGAIN", len(compat.APPLIED))
"""


def _fake_packages(root, packages: dict) -> str:
    for name, source in packages.items():
        os.makedirs(root / name, exist_ok=True)
        (root / name / "__init__.py").write_text(textwrap.dedent(source))
    return str(root)


def test_compat_scenarios_in_a_fresh_interpreter(tmp_path):
    other = _fake_packages(tmp_path / "other", {"torchvision": "raise RuntimeError('CUDA driver is insufficient')\n"})
    healthy = _fake_packages(tmp_path / "healthy", {"torchvision": "WORKS = 'healthy'\n",
                                                    "autoattack": "AutoAttack = 'genuine'\n"})
    broken = _fake_packages(tmp_path / "broken", {"torchvision": BROKEN_TORCHVISION,
                                                  "pyautoattack": "AutoAttack = 'aliased'\n"})
    res = subprocess.run([sys.executable, "-c", SCENARIOS, other, healthy, broken],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "1 RERAISED CUDA driver is insufficient []"
    assert lines[1] == "2 [] healthy absent genuine"
    assert lines[2].startswith("3 ['torchvision: defined nms/qnms schemas") and "autoattack: aliased" in lines[2]
    assert lines[2].endswith(" True")  # the broken fake imported completely after the fix
    assert lines[3] == "3 SCHEMA torchvision::nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    assert lines[4] == "3 ALIAS True aliased" and lines[5] == "3 AGAIN 2"


def test_patch_torchvision_in_process_decisions(monkeypatch):
    """The decision logic on a fake importer (no schema is defined in this process)."""
    before = list(_compat.APPLIED)

    def raising(err):
        def import_module(name):
            assert name == "torchvision"
            raise err
        return import_module

    monkeypatch.setattr(_compat.importlib, "import_module", raising(RuntimeError("some other failure")))
    with pytest.raises(RuntimeError, match="some other failure"):
        _compat.patch_torchvision()
    monkeypatch.setattr(_compat.importlib, "import_module", raising(ModuleNotFoundError("No module named 'torchvision'")))
    _compat.patch_torchvision()  # not installed: nothing to do
    monkeypatch.setattr(_compat.importlib, "import_module", lambda name: object())
    _compat.patch_torchvision()  # imports fine: nothing to do
    assert _compat.APPLIED == before


def test_this_install():
    """On this machine's stack the fixes that are needed are applied, and only those."""
    import torch

    applied_tv = any(a.startswith("torchvision:") for a in _compat.APPLIED)
    if importlib.machinery.PathFinder.find_spec("torchvision") is not None:
        # Compiled torchvision ops loaded (healthy install) <=> nms has a CPU kernel.
        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        try:
            torch.ops.torchvision.nms(boxes, torch.ones(1), 0.5)
            has_kernels = True
        except (NotImplementedError, RuntimeError):
            has_kernels = False
        assert applied_tv == (not has_kernels)
    else:
        assert not applied_tv
    genuine = importlib.machinery.PathFinder.find_spec("autoattack") is not None  # ignores sys.modules
    has_pyaa = importlib.machinery.PathFinder.find_spec("pyautoattack") is not None
    aa = sys.modules.get("autoattack")
    aliased = aa is not None and aa.__name__ == "pyautoattack"
    assert any(a.startswith("autoattack:") for a in _compat.APPLIED) == aliased == (has_pyaa and not genuine)
    # what the fixes are for: torchvision transforms, timm and robustbench import
    importlib.import_module("torchvision.transforms")
    importlib.import_module("timm")
    if has_pyaa and importlib.util.find_spec("robustbench") is not None:
        from autoattack import AutoAttack  # noqa: F401  (robustbench does exactly this)
