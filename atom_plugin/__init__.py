"""atom_plugin: robust out-of-distribution detection on top of torchattacks.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]`` everywhere; detector scores are
OOD scores (higher = more OOD).  See the README for conventions and the architecture.
"""
from . import _compat  # noqa: F401  (must run before torchvision/timm/robustbench imports)

__version__ = "0.1.0"

from .models import Normalize, SmallCNN, head_spec, with_reject_head  # noqa: E402

__all__ = ["__version__", "Normalize", "SmallCNN", "head_spec", "with_reject_head"]
