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


def _load_npy(path: str) -> np.ndarray:
    """``np.load(path, mmap_mode="r", allow_pickle=False)`` with errors that name the file."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "object" in str(err).lower():
            raise ValueError(f"{path} holds an object-dtype array (pickled Python objects), which is never "
                             "loaded; save the images as a numeric uint8 or float array.") from None
        raise ValueError(f"{path} is not a readable .npy array ({err}); re-save it with np.save.") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npy array ({type(err).__name__}: {err}); re-save it with "
                         "np.save.") from None


def load_npy_images(path: str, label: int = OOD_LABEL, name: str = "") -> NumpyImageDataset:
    """A memory-mapped ``.npy`` of images: ``uint8 (N, H, W, C)`` or float ``(N, C, H, W)`` in [0, 1].

    Float files are checked once for values in ``[0, 1]`` (this reads the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image array not found: {path}.")
    arr = _load_npy(path)
    channels_last_u8 = arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3)
    channels_first_float = arr.dtype in (np.float16, np.float32, np.float64) and arr.ndim == 4 and arr.shape[1] in (1, 3)
    if not (channels_last_u8 or channels_first_float) or arr.shape[0] == 0:
        raise ValueError(
            f"{path} must hold a non-empty uint8 array (N, H, W, C) or a float array (N, C, H, W) in [0, 1], "
            f"with C in (1, 3); got dtype {arr.dtype} and shape {arr.shape}."
        )
    if channels_first_float:
        lo, hi = float(arr.min()), float(arr.max())  # NaN propagates and fails the test below
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"{path}: float images must be finite and in [0, 1], got min {lo:.4g}, max {hi:.4g}.")
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
    if ds.array.dtype != np.uint8 or ds.array.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path} must be uint8 of shape (N, 32, 32, 3), got {ds.array.dtype} {ds.array.shape}.")
    return ds
