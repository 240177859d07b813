"""The import-order hook: ``import timm, atom_plugin`` (torchvision first) works on the
pinned CPU stack, and the hook does nothing but wait for torchvision.

Fresh interpreters (subprocess) are needed: the fix happens at the first torchvision import.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from atom_plugin import _compat

HOOK_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(_compat.__file__))),
                         _compat.HOOK_MODULE + ".py")


def _run(code: str, *args: str, timeout: int = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _hook_installed() -> bool:
    res = _run("import sys; print('_atom_plugin_import_hook' in sys.modules)")
    return res.stdout.strip() == "True"


def test_third_party_imports_before_atom_plugin():
    if not _hook_installed():
        pytest.skip("the import hook is not installed in this environment (atom_plugin._compat.install_import_hook())")
    res = _run("""
        import timm, atom_plugin, torchvision, sys
        from torchvision import transforms
        import atom_plugin._compat as c
        m = timm.create_model("resnet18", pretrained=False, num_classes=3)
        print("OK", type(m).__name__, transforms.ToTensor.__name__)
        print("LOADER", type(torchvision.__spec__.loader).__name__, type(torchvision.__loader__).__name__)
        print("APPLIED", c.APPLIED)
        print("META", [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path])
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert out["OK"] == "ResNet ToTensor"
    assert out["LOADER"] == "SourceFileLoader SourceFileLoader"  # the wrapper hands the module back
    assert "_TorchvisionFinder" not in out["META"]  # one-shot: removed at the first torchvision import
    res = _run("import pytorch_ood, atom_plugin; print('OK')")
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr[-2000:]


FAKES = {
    "broken": """
import torch

@torch.library.register_fake("torchvision::nms")
def _nms_fake(dets, scores, iou_threshold):
    return dets.new_empty(0, dtype=torch.long)

WORKS = True
""",
    "healthy": "WORKS = 'healthy'\n",
    "other": "raise RuntimeError('CUDA driver is insufficient')\n",
}

HOOK_UNDER_TEST = f"""
import importlib.util, sys
installed = sys.modules.get("_atom_plugin_import_hook")
if installed is not None:
    installed.uninstall()  # the copy loaded at start-up must not see the fake packages
spec = importlib.util.spec_from_file_location("hook_under_test", {HOOK_FILE!r})
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)  # installs its finder
sys.path.insert(0, sys.argv[1])
assert hook._TorchvisionFinder.find_spec("json") is None  # every other module: nothing
try:
    import torchvision
    print("WORKS", torchvision.WORKS)
except RuntimeError as err:
    print("RAISED", err)
import torch
try:
    torch.ops.torchvision.nms.default
    print("SCHEMA defined")
except (AttributeError, RuntimeError):
    print("SCHEMA absent")
print("APPLIED", hook.APPLIED)
print("FINDER", hook._TorchvisionFinder in sys.meta_path)
"""


@pytest.mark.parametrize("fake, expect", [
    ("broken", ["WORKS True", "SCHEMA defined", "APPLIED ['torchvision: defined"]),
    ("healthy", ["WORKS healthy", "SCHEMA absent", "APPLIED []"]),
    ("other", ["RAISED CUDA driver is insufficient", "SCHEMA absent", "APPLIED []"]),
])
def test_hook_acts_only_on_the_known_failure(tmp_path, fake, expect):
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(FAKES[fake])
    res = _run(HOOK_UNDER_TEST, str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    for want, got in zip(expect, lines):
        assert got.startswith(want), (want, lines)
    assert lines[-1] == "FINDER False"


def test_install_import_hook_into_a_site_dir(tmp_path):
    pth = _compat.install_import_hook(str(tmp_path))
    assert os.path.basename(pth) == "atom_plugin_import_hook.pth"
    assert sorted(os.listdir(tmp_path)) == ["__pycache__", "_atom_plugin_import_hook.py", "atom_plugin_import_hook.pth"]
    line = open(pth).read()
    assert line.startswith("import ") and line.count("\n") == 1  # site.py executes one 'import' line
    # the same line the wheel ships (setup.py copies this file to site-packages)
    repo_pth = os.path.join(os.path.dirname(HOOK_FILE), _compat.HOOK_PTH)
    assert open(repo_pth).read() == line
    # a left-over .pth without its module never breaks interpreter start-up
    os.remove(tmp_path / "_atom_plugin_import_hook.py")
    for p in (tmp_path / "__pycache__").iterdir():
        p.unlink()
    res = _run("""
        import sys
        sys.modules.pop("_atom_plugin_import_hook", None)
        sys.path = [p for p in sys.path if "site-packages" not in p]
        # an editable install maps the module through a meta-path finder: hide it too
        sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                         and "editable" not in getattr(f, "__module__", "").lower()]
        import site; site.addsitedir(sys.argv[1]); print("OK", "_atom_plugin_import_hook" in sys.modules)
    """, str(tmp_path), cwd=str(tmp_path))  # not the repository root, which holds the module
    assert res.returncode == 0 and res.stdout.strip() == "OK False" and res.stderr == "", res.stderr
    with pytest.raises(FileNotFoundError, match="site_dir"):
        _compat.install_import_hook(str(tmp_path / "missing"))


def test_hook_module_imports_nothing_at_start_up():
    """The module the .pth loads in every process imports only ``sys`` at top level."""
    import ast

    tree = ast.parse(open(HOOK_FILE).read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [a.name for n in top for a in n.names] == ["sys"]
