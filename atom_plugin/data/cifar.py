"""CIFAR-10 / CIFAR-100 from the official python batches (never downloads).

Layout (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``,
https://www.cs.toronto.edu/~kriz/cifar.html)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
    <root>/cifar-100-python/train, test

``root`` may also be the ``cifar-10-batches-py`` / ``cifar-100-python`` folder itself.

The batches are Python pickles.  They are read with :class:`RestrictedUnpickler`, which
resolves only the few numpy names needed to rebuild arrays (``ndarray``, ``dtype``,
``_reconstruct``, ``scalar``) and ``_codecs.encode``; any other global (``os.system``,
``builtins.eval``, ...) raises ``pickle.UnpicklingError``, so a tampered file cannot
run code.
"""
from __future__ import annotations

import codecs
import os
import pickle
from typing import Any

import numpy as np
import torch

from .._validation import check_choice
from .tensor import TensorImageDataset

__all__ = ["load_cifar10", "load_cifar100", "load_cifar", "RestrictedUnpickler", "restricted_pickle_load"]

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts/lists of numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        ma = _numpy_multiarray()
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,
        }
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "_reconstruct")] = ma._reconstruct
            allowed[(mod, "scalar")] = ma.scalar
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed in dataset pickles"
            ) from None


class DatasetPickleError(pickle.UnpicklingError, ValueError):
    """A dataset pickle that is refused or unreadable; the message names the file (a
    ``ValueError`` too, so the CLI reports it as an input error)."""


def restricted_pickle_load(path: str, encoding: str = "latin1") -> Any:
    """Load a pickle of plain containers and numpy arrays with :class:`RestrictedUnpickler`."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding=encoding).load()
        except pickle.UnpicklingError as err:
            if "refusing to load global" in str(err):
                raise DatasetPickleError(f"{path}: {err}; use the official python batches.") from None
            raise DatasetPickleError(f"{path} is not a readable pickle ({err}); re-extract the dataset archive.") \
                from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as err:
            raise DatasetPickleError(f"{path} is truncated or not a dataset pickle ({type(err).__name__}); "
                                     "re-extract the dataset archive.") from None


def _get(d: dict, key: str):
    if key in d:
        return d[key]
    if key.encode() in d:
        return d[key.encode()]
    raise ValueError(f"CIFAR batch has no '{key}' entry (keys: {list(d)[:6]}); is this an official python batch?")


def _read_batches(paths: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for p in paths:
        d = restricted_pickle_load(p)
        if not isinstance(d, dict):
            raise ValueError(f"{p} does not hold a CIFAR batch dict (got {type(d).__name__}).")
        x = np.asarray(_get(d, "data"))
        y = np.asarray(_get(d, label_key), dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{p}: expected 'data' uint8 of shape (N, 3072) and N labels, got {x.dtype} {x.shape} and "
                f"{y.shape[0]} labels."
            )
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _resolve(root: str, folder: str, first_file: str, what: str, archive: str) -> str:
    root = os.fspath(root)
    for cand in (os.path.join(root, folder), root):
        if os.path.isfile(os.path.join(cand, first_file)):
            return cand
    raise FileNotFoundError(
        f"{what} not found: expected {os.path.join(root, folder, first_file)}. This library never downloads; "
        f"get {archive} from {_URL} and extract it into {root} (creating {folder}/)."
    )


def load_cifar(root: str, name: str = "cifar10", split: str = "train", label_type: str = "fine") -> TensorImageDataset:
    """CIFAR-10 or CIFAR-100 (``name``), ``split`` in {"train", "test"}.

    Returns a :class:`TensorImageDataset` of ``(float (3, 32, 32) in [0, 1], int label)``.
    ``label_type`` ("fine"/"coarse") only matters for CIFAR-100.
    """
    check_choice(name, "name", ("cifar10", "cifar100"))
    check_choice(split, "split", ("train", "test"))
    check_choice(label_type, "label_type", ("fine", "coarse"))
    if name == "cifar10":
        d = _resolve(root, "cifar-10-batches-py", "test_batch", "CIFAR-10", "cifar-10-python.tar.gz")
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        d = _resolve(root, "cifar-100-python", "test", "CIFAR-100", "cifar-100-python.tar.gz")
        files = [split]
        label_key = f"{label_type}_labels"
    paths = [os.path.join(d, f) for f in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{name} {split} split incomplete: missing {missing}; re-extract the archive from {_URL}.")
    x, y = _read_batches(paths, label_key)
    return TensorImageDataset(x, y, name=f"{name}-{split}")


def load_cifar10(root: str, split: str = "train") -> TensorImageDataset:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (see module docstring)."""
    return load_cifar(root, "cifar10", split)


def load_cifar100(root: str, split: str = "train", label_type: str = "fine") -> TensorImageDataset:
    """CIFAR-100 from ``<root>/cifar-100-python`` (see module docstring)."""
    return load_cifar(root, "cifar100", split, label_type)
