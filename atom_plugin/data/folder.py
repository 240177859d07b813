"""Folders of image files (Textures/DTD, LSUN, iSUN, Places365, ...), read lazily.

Every image file under ``root`` (recursively, sorted paths; extensions in
:data:`IMAGE_EXTENSIONS`) becomes one sample with a fixed label (``-1`` for OOD sets).
Images are converted to RGB and brought to ``image_size`` x ``image_size``:

* ``mode="resize_crop"`` (default): resize the shorter side to ``image_size``
  (bilinear, antialiased), then center-crop (torchvision ``Resize`` + ``CenterCrop``);
* ``mode="center_crop"``: center-crop without resizing (LSUN-crop's 36x36 patches, as
  in Outlier Exposure); images smaller than ``image_size`` are an error.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

from .._validation import check_choice, check_int
from .tensor import OOD_LABEL, as_index

__all__ = ["ImageFolderDataset", "IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def list_images(root: str) -> list[str]:
    """Sorted paths of all image files under ``root`` (recursive)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out += [os.path.join(d, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


class ImageFolderDataset(Dataset):
    """All images under ``root`` as ``(float (3, S, S) in [0, 1], label)``.

    Args:
        root: folder searched recursively.
        image_size: output side ``S``.
        label: the label of every image (default ``-1``: OOD).
        mode: ``"resize_crop"`` or ``"center_crop"`` (see module docstring).
        transform: optional callable on each float image.
        name: short name for reports.
    """

    def __init__(self, root: str, image_size: int = 32, label: int = OOD_LABEL, mode: str = "resize_crop",
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, name: str = "") -> None:
        root = os.fspath(root)
        check_int(image_size, "image_size", low=1)
        check_choice(mode, "mode", ("resize_crop", "center_crop"))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root} (`root` must be a directory of images).")
        self.paths = list_images(root)
        if not self.paths:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}.")
        self.root = root
        self.image_size = image_size
        self.label = int(label)
        self.mode = mode
        self.transform = transform
        self.name = name or os.path.basename(os.path.normpath(root))

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        s = self.image_size
        try:
            with Image.open(self.paths[i]) as im:
                im = im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            # UnidentifiedImageError / "image file is truncated" are OSErrors; a bad PNG chunk is a SyntaxError
            raise ValueError(f"{self.paths[i]} cannot be read as an image ({type(err).__name__}: {err}); "
                             "remove or replace the file.") from None
        w, h = im.size
        if self.mode == "resize_crop" and min(w, h) != s:
            scale = s / min(w, h)
            w, h = max(s, round(w * scale)), max(s, round(h * scale))
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        if min(w, h) < s:
            raise ValueError(f"{self.paths[i]} is {w}x{h}, smaller than image_size={s}; use mode='resize_crop'.")
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
        return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int):
        x = self._load(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label

    def get_batch(self, indices) -> torch.Tensor:
        """Float images ``(len(indices), 3, S, S)`` in ``[0, 1]`` (no ``transform``)."""
        idx = as_index(indices, len(self))
        if idx.size == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([self._load(int(i)) for i in idx])

    def __repr__(self) -> str:
        return f"ImageFolderDataset(name={self.name!r}, n={len(self)}, root={self.root!r}, size={self.image_size})"
