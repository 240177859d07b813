"""ImageNet-RC (ATOM, Appendix B.1): random 32x32 crops (padding 4) of downsampled ImageNet.

Layout (Downsampled ImageNet 64x64, Chrabaszcz et al. 2017, from
https://image-net.org/download-images, "Imagenet64_train_part1/2_npz")::

    <root>/**/train_data_batch_1.npz ... train_data_batch_10.npz     (split="train")
    <root>/**/val_data.npz                                           (split="val")

Each ``.npz`` holds ``data`` ``uint8 (N, 3 * S * S)`` (R plane, G plane, B plane; S = 64,
or 32/16/8 for the other downsampled variants) and ``labels``.  Files are read with
``allow_pickle=False``; when the ``data`` member is stored uncompressed (as ``np.savez``
writes it) it is memory-mapped straight out of the archive, so the 15 GB of the full
training set never have to fit in RAM.  Labels are ignored: the set is an auxiliary
outlier pool (label -1).
"""
from __future__ import annotations

import glob
import os
import re
import struct
import zipfile
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validation import check_choice, check_int
from .tensor import OOD_LABEL, Indices, as_index, pickle_array, unpickle_array

__all__ = ["ImageNetRCDataset", "load_imagenet_rc", "npz_member"]


def npz_member(path: str, key: str) -> np.ndarray:
    """Array ``key`` of the ``.npz`` at ``path``: memory-mapped if stored uncompressed, else loaded.

    Never unpickles (object arrays are refused).  Unreadable files raise ``ValueError`` naming them.
    """
    try:
        return _npz_member(path, key)
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: array {key!r} cannot be read ({err}); re-create the file with np.savez "
                         "of numeric arrays.") from None
    except (OSError, EOFError, zipfile.BadZipFile, struct.error) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err}); download or "
                         "re-create it.") from None


def _npz_member(path: str, key: str) -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(key + ".npy")
        except KeyError:
            raise ValueError(f"{path} has no array {key!r} (members: {zf.namelist()[:6]}).") from None
        stored = info.compress_type == zipfile.ZIP_STORED
    if stored:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: corrupt zip local header for {key!r}.")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                stored = False
            else:
                shape, fortran, dtype = reader[version](f)
                offset = f.tell()
        if stored:
            if dtype.hasobject:
                raise ValueError(f"{path}: array {key!r} holds Python objects; refusing to unpickle.")
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as z:
        return z[key]


class ImageNetRCDataset(Dataset):
    """Random ``image_size`` crops (after zero ``padding``) of square uint8 images, label -1.

    Args:
        arrays: ``uint8 (N_i, 3 * S * S)`` arrays (planar RGB rows), concatenated in order.
        image_size: crop side (32 in the paper).
        padding: zero padding added on every side before cropping (4 in the paper).
        seed: seed of the crop positions (``None``: nondeterministic).  Each access draws
            a new crop, like a ``RandomCrop`` transform.
        transform: optional callable on each float crop (e.g. random flip).
    """

    def __init__(self, arrays: Sequence[np.ndarray], image_size: int = 32, padding: int = 4,
                 seed: Optional[int] = None, transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 name: str = "imagenet-rc") -> None:
        check_int(image_size, "image_size", low=1)
        check_int(padding, "padding", low=0)
        arrays = list(arrays)
        if not arrays:
            raise ValueError("`arrays` is empty; pass at least one (N, 3*S*S) uint8 array.")
        dims = {a.shape[1] if a.ndim == 2 else -1 for a in arrays}
        side = int(round((next(iter(dims)) / 3) ** 0.5)) if len(dims) == 1 else -1
        if any(a.dtype != np.uint8 for a in arrays) or len(dims) != 1 or 3 * side * side != next(iter(dims)):
            raise ValueError(
                f"every array must be uint8 of shape (N, 3*S*S) with one S (planar RGB rows), got "
                f"{[(str(a.dtype), a.shape) for a in arrays]}."
            )
        if image_size > side + 2 * padding:
            raise ValueError(f"`image_size`={image_size} exceeds the padded image side {side + 2 * padding}.")
        self.arrays = arrays
        self.side = side
        self.offsets = np.cumsum([0] + [a.shape[0] for a in arrays])
        self.image_size = image_size
        self.padding = padding
        self.rng = np.random.default_rng(seed)
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.where(idx < 0, idx + len(self), idx)
        out = np.empty((idx.size, 3 * self.side * self.side), dtype=np.uint8)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            local = idx[sel] - self.offsets[p]
            order = np.argsort(local, kind="stable")
            out[sel[order]] = self.arrays[p][local[order]]
        return out.reshape(-1, 3, self.side, self.side)

    def _crop(self, x: np.ndarray) -> torch.Tensor:
        p, s = self.padding, self.image_size
        if p:
            x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        span = x.shape[-1] - s + 1
        ys, xs = self.rng.integers(0, span, size=(2, x.shape[0]))
        oy = ys[:, None, None, None] + np.arange(s)[None, None, :, None]
        ox = xs[:, None, None, None] + np.arange(s)[None, None, None, :]
        crops = x[np.arange(x.shape[0])[:, None, None, None], np.arange(3)[None, :, None, None], oy, ox]
        return torch.from_numpy(crops).float().div_(255.0)

    def __getitem__(self, i: int):
        x = self._crop(self._rows(as_index([i], len(self))))[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, OOD_LABEL

    def get_batch(self, indices: Indices) -> torch.Tensor:
        """Fresh random crops ``(len(indices), 3, image_size, image_size)`` in ``[0, 1]``."""
        return self._crop(self._rows(as_index(indices, len(self))))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["arrays"] = [pickle_array(a) for a in self.arrays]
        return state

    def __setstate__(self, state: dict) -> None:
        state["arrays"] = [unpickle_array(a) for a in state["arrays"]]
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ImageNetRCDataset(n={len(self)}, source={self.side}x{self.side}, crop={self.image_size}, pad={self.padding})"


def _batch_number(path: str) -> int:
    m = re.search(r"train_data_batch_(\d+)\.npz$", path)
    return int(m.group(1)) if m else 0


def load_imagenet_rc(root: str, split: str = "train", batches: Optional[Sequence[int]] = None,
                     image_size: int = 32, padding: int = 4, seed: Optional[int] = None) -> ImageNetRCDataset:
    """ImageNet-RC from the downsampled-ImageNet ``.npz`` files under ``root`` (see module docstring).

    ``batches`` selects training batch numbers (1..10; default all found), e.g. ``(1,)``
    for a 128K-image pool.
    """
    check_choice(split, "split", ("train", "val"))
    root = os.fspath(root)
    if split == "train":
        files = sorted(glob.glob(os.path.join(root, "**", "train_data_batch_*.npz"), recursive=True), key=_batch_number)
        if batches is not None:
            wanted = {check_int(b, "batches", low=1) for b in batches}
            files = [f for f in files if _batch_number(f) in wanted]
            found = {_batch_number(f) for f in files}
            if wanted - found:
                raise FileNotFoundError(
                    f"ImageNet-RC: train_data_batch_{sorted(wanted - found)[0]}.npz not found under {root}."
                )
        expected = os.path.join(root, "train_data_batch_1.npz")
    else:
        files = sorted(glob.glob(os.path.join(root, "**", "val_data.npz"), recursive=True))[:1]
        expected = os.path.join(root, "val_data.npz")
    if not files:
        raise FileNotFoundError(
            f"ImageNet-RC not found: expected {expected} (searched {root} recursively). This library never downloads; "
            "get Downsampled ImageNet 64x64 (npz) from https://image-net.org/download-images and extract it there."
        )
    arrays = [npz_member(f, "data") for f in files]
    return ImageNetRCDataset(arrays, image_size=image_size, padding=padding, seed=seed)
