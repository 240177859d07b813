"""Auxiliary outlier pools stored as numpy arrays (never downloads).

* ``300K_random_images.npy`` (Hendrycks et al., Outlier Exposure): 300,000 TinyImages,
  ``(N, 32, 32, 3)`` uint8, the usual stand-in for the 80M TinyImages auxiliary set.
  Get it from https://github.com/hendrycks/outlier-exposure (link in its README) and put
  it at ``<root>/300K_random_images.npy``.  It is opened with
  ``np.load(mmap_mode="r", allow_pickle=False)``: no pickle, and images are read from
  disk only when accessed (the 2.7 GB file never has to fit in RAM).
"""
from __future__ import annotations

import os

import numpy as np

from .tensor import OOD_LABEL, NumpyImageDataset

__all__ = ["load_random_300k", "load_npy_images", "RANDOM_300K_FILE"]

RANDOM_300K_FILE = "300K_random_images.npy"


def load_npy_images(path: str, label: int = OOD_LABEL, name: str = "") -> NumpyImageDataset:
    """A memory-mapped ``.npy`` of uint8 images ``(N, H, W, C)``, C in (1, 3)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image array not found: {path}.")
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.shape[0] == 0:
        raise ValueError(
            f"{path} must hold a non-empty uint8 array of shape (N, H, W, C) with C in (1, 3), got dtype "
            f"{arr.dtype} and shape {arr.shape}."
        )
    return NumpyImageDataset(arr, label=label, name=name or os.path.basename(path))


def load_random_300k(root: str) -> NumpyImageDataset:
    """The 300K random TinyImages (label -1), memory-mapped.

    ``root`` is the ``.npy`` file or the folder holding ``300K_random_images.npy``.
    """
    root = os.fspath(root)
    path = root if os.path.isfile(root) else os.path.join(root, RANDOM_300K_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"300K random images not found: expected {path}. This library never downloads; get "
            f"{RANDOM_300K_FILE} (linked from https://github.com/hendrycks/outlier-exposure) and put it there."
        )
    ds = load_npy_images(path, OOD_LABEL, name="300k-random")
    if ds.array.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path} must have shape (N, 32, 32, 3), got {ds.array.shape}.")
    return ds
