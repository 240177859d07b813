"""SVHN (cropped digits, format 2) from the official ``.mat`` files (never downloads).

Layout (files from http://ufldl.stanford.edu/housenumbers/)::

    <root>/train_32x32.mat, test_32x32.mat, extra_32x32.mat   (or <root>/svhn/...)

Each file holds ``X`` of shape ``(32, 32, 3, N)`` uint8 and ``y`` of shape ``(N, 1)``
with labels 1..10, where 10 means the digit 0 (mapped to 0 here).  ``.mat`` (MATLAB v5)
files are read with ``scipy.io.loadmat``, which parses arrays and does not execute code.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .._validation import check_choice
from .tensor import TensorImageDataset

__all__ = ["load_svhn"]


def load_svhn(root: str, split: str = "test") -> TensorImageDataset:
    """SVHN ``split`` in {"train", "test", "extra"}: ``(float (3, 32, 32) in [0, 1], label 0..9)``."""
    from scipy.io import loadmat

    check_choice(split, "split", ("train", "test", "extra"))
    root = os.fspath(root)
    fname = f"{split}_32x32.mat"
    path = next((p for p in (os.path.join(root, fname), os.path.join(root, "svhn", fname)) if os.path.isfile(p)), None)
    if path is None:
        raise FileNotFoundError(
            f"SVHN {split} split not found: expected {os.path.join(root, fname)}. This library never downloads; "
            f"get {fname} from http://ufldl.stanford.edu/housenumbers/ and put it in {root}."
        )
    try:
        mat = loadmat(path)
    except Exception as err:  # MatReadError, ValueError, OSError, TypeError from a truncated/foreign file
        raise ValueError(f"{path} is not a readable SVHN .mat file ({type(err).__name__}: {str(err)[:120]}); "
                         f"download {fname} again.") from None
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path} must contain arrays 'X' and 'y' (the SVHN format 2 layout), found {sorted(mat)}.")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8 or x.shape[3] != y.shape[0]:
        raise ValueError(
            f"{path}: 'X' must be uint8 of shape (32, 32, 3, N) with N = len(y), got {x.dtype} {x.shape} "
            f"and {y.shape[0]} labels."
        )
    labels = y.astype(np.int64) % 10  # 10 -> 0
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return TensorImageDataset(images, torch.from_numpy(labels), name=f"svhn-{split}")
