"""Import-order fix for torchvision, installed by atom_plugin (``atom_plugin_import_hook.pth``).

Python runs the ``.pth`` line in every process of the environment, so this module does
the least possible at start-up: it imports nothing and puts one finder on
``sys.meta_path`` whose ``find_spec`` returns ``None`` at once for every module except
``torchvision``.  The first ``import torchvision`` (by timm, pytorch_ood, user code, or
atom_plugin) goes through :class:`_TorchvisionFinder`, which removes itself and runs
torchvision's own loader.  Only if that import fails with the known
``operator torchvision::nms does not exist`` (torchvision wheels whose compiled ops
link CUDA libraries, beside a CPU-only torch) does it define the ``nms``/``qnms`` op
schemas and run torchvision's ``__init__`` again; see ``atom_plugin._compat``.

On a healthy install nothing changes.  ``APPLIED`` says what was done.
"""
import sys

NMS_ERROR = "operator torchvision::nms does not exist"
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
#: Holds the torch.library fragment alive; a collected Library drops its schemas.
FRAGMENT = None
APPLIED = []


def define_torchvision_schemas():
    """Define the torchvision op schemas a CPU torch lacks (idempotent)."""
    global FRAGMENT
    if FRAGMENT is None:
        import torch

        frag = torch.library.Library("torchvision", "FRAGMENT")
        for schema in SCHEMAS:
            frag.define(schema)
        FRAGMENT = frag
    return FRAGMENT


class _Loader:
    """torchvision's loader, run again after defining the schemas on the known failure."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        except RuntimeError as err:
            if NMS_ERROR not in str(err):
                raise
            for name in [m for m in sys.modules if m.startswith("torchvision.")]:
                del sys.modules[name]
            define_torchvision_schemas()
            self.loader.exec_module(module)
            APPLIED.append("torchvision: defined nms/qnms schemas (CUDA-linked ops beside CPU torch)")
        finally:  # hand the module back to its own loader
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader


class _TorchvisionFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "torchvision":
            return None
        uninstall()
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install():
    if "torchvision" not in sys.modules and _TorchvisionFinder not in sys.meta_path:
        sys.meta_path.insert(0, _TorchvisionFinder)


def uninstall():
    try:
        sys.meta_path.remove(_TorchvisionFinder)
    except ValueError:
        pass


install()
