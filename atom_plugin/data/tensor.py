"""In-memory and memory-mapped image datasets that yield ``(image, label)``.

Images are stored as ``uint8`` (compact) and converted to float ``[0, 1]`` on access,
so every dataset in :mod:`atom_plugin.data` yields ``(float (C, H, W) in [0, 1], int)``;
OOD and auxiliary sets use the label ``-1``.  ``get_batch(indices)`` returns a float
batch ``(B, C, H, W)`` directly, which outlier mining uses to fetch candidates by index.
"""
from __future__ import annotations

import mmap
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["TensorImageDataset", "NumpyImageDataset", "OOD_LABEL"]

#: The label every OOD / auxiliary-outlier dataset yields.
OOD_LABEL = -1

Indices = Union[Sequence[int], np.ndarray, torch.Tensor, slice]


def as_index(indices: Indices, n: int, name: str = "indices") -> np.ndarray:
    if isinstance(indices, slice):
        return np.arange(n)[indices]
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(f"`{name}` must be a 1-D sequence of ints, got array of shape {idx.shape} and dtype {idx.dtype}.")
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"`{name}` out of range for a dataset of {n} images (min {idx.min()}, max {idx.max()}).")
    return idx


def pickle_array(arr: np.ndarray):
    """A picklable stand-in for a memory-mapped array (file, offset, ...), else the array itself.

    Pickling an ``np.memmap`` copies its whole content; DataLoader workers started with
    "spawn" would each receive a copy of e.g. the 2.7 GB 300K file.
    """
    if isinstance(arr, np.memmap) and arr.filename is not None and isinstance(arr.base, mmap.mmap):
        order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        return ("memmap", arr.filename, arr.offset, arr.shape, arr.dtype.str, order)
    return arr


def unpickle_array(obj) -> np.ndarray:
    if isinstance(obj, tuple) and obj and obj[0] == "memmap":
        _, filename, offset, shape, dtype, order = obj
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape, order=order)
    return obj


class TensorImageDataset(Dataset):
    """A dataset over a ``uint8`` tensor of images ``(N, C, H, W)`` and integer labels.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)`` (values 0..255).
        labels: ``(N,)`` integer labels, or one int for all images (``-1`` for OOD data).
        transform: optional callable applied to each float ``(C, H, W)`` image in ``[0, 1]``
            (e.g. random crop/flip for training); not applied by :meth:`get_batch`.
        name: a short name used in ``repr`` and reports.

    ``ds[i]`` is ``(image float32 (C, H, W) in [0, 1], int label)``.
    """

    def __init__(self, images: torch.Tensor, labels: Union[torch.Tensor, Sequence[int], int] = OOD_LABEL,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, name: str = "") -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`images` must be a uint8 torch.Tensor (N, C, H, W), got {type(images).__name__}.")
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"`images` must be a uint8 tensor of shape (N, C, H, W), got dtype {images.dtype} and shape "
                f"{tuple(images.shape)}; convert float images with (x * 255).round().to(torch.uint8)."
            )
        n = images.shape[0]
        if isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,):
            raise ValueError(f"`labels` must have shape ({n},) to match `images`, got {tuple(labels.shape)}.")
        self.images = images.contiguous()
        self.labels = labels
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])

    def get_batch(self, indices: Indices) -> torch.Tensor:
        """Float images ``(len(indices), C, H, W)`` in ``[0, 1]`` (no ``transform``)."""
        idx = torch.as_tensor(as_index(indices, len(self)), dtype=torch.long)
        return self.images[idx].float().div_(255.0)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float ``(N, C, H, W)`` in ``[0, 1]`` and the ``(N,)`` labels."""
        return self.images.float().div_(255.0), self.labels.clone()

    def subset(self, indices: Indices, name: Optional[str] = None) -> "TensorImageDataset":
        """A new dataset holding the selected images (copies; same ``transform``)."""
        idx = torch.as_tensor(as_index(indices, len(self)), dtype=torch.long)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.transform,
                                  self.name if name is None else name)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"TensorImageDataset(name={self.name!r}, n={len(self)}, shape=({c}, {h}, {w}))"


class NumpyImageDataset(Dataset):
    """A dataset over a numpy image array, typically memory-mapped (nothing read until used).

    Two layouts are accepted:

    * ``uint8 (N, H, W, C)``, C in (1, 3), values 0..255 (``300K_random_images.npy``,
      ``atom-ood attack --format uint8``);
    * ``float16/32/64 (N, C, H, W)``, C in (1, 3), values in ``[0, 1]`` (``atom-ood attack``
      default output, exact adversarial images).

    ``ds[i]`` is ``(float32 (C, H, W) in [0, 1], label)``.
    """

    def __init__(self, array: np.ndarray, label: int = OOD_LABEL,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, name: str = "") -> None:
        ok = isinstance(array, np.ndarray) and array.ndim == 4 and (
            (array.dtype == np.uint8 and array.shape[-1] in (1, 3))
            or (array.dtype in (np.float16, np.float32, np.float64) and array.shape[1] in (1, 3)))
        if not ok:
            shape = getattr(array, "shape", None)
            dtype = getattr(array, "dtype", type(array).__name__)
            raise ValueError(
                f"`array` must be uint8 of shape (N, H, W, C) or float of shape (N, C, H, W) in [0, 1], with C in "
                f"(1, 3); got dtype {dtype} and shape {shape}."
            )
        self.array = array
        self.channels_last = array.dtype == np.uint8
        self.label = int(label)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def image_shape(self) -> tuple:
        if self.channels_last:
            n, h, w, c = self.array.shape
            return (c, h, w)
        return tuple(self.array.shape[1:])

    def _convert(self, rows: np.ndarray) -> torch.Tensor:  # (B, ...) -> float32 (B, C, H, W)
        if self.channels_last:
            return torch.from_numpy(rows).permute(0, 3, 1, 2).float().div_(255.0)
        return torch.from_numpy(rows.astype(np.float32, copy=False))

    def __getitem__(self, i: int):
        x = self._convert(np.array(self.array[i], copy=True)[None])[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label

    def get_batch(self, indices: Indices) -> torch.Tensor:
        """Float images ``(len(indices), C, H, W)`` in ``[0, 1]``; reads only those rows."""
        idx = as_index(indices, len(self))
        order = np.argsort(idx, kind="stable")  # sorted reads are much faster on a memmap
        rows = np.empty((idx.size,) + self.array.shape[1:], dtype=self.array.dtype)
        rows[order] = self.array[idx[order]]
        return self._convert(rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["array"] = pickle_array(self.array)
        return state

    def __setstate__(self, state: dict) -> None:
        state["array"] = unpickle_array(state["array"])
        self.__dict__.update(state)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"NumpyImageDataset(name={self.name!r}, n={len(self)}, shape=({c}, {h}, {w}))"
