"""Common corruptions (Hendrycks & Dietterich, 2019) behind one function, two backends.

``corrupt(images, name, severity, backend="torch", seed=None, table="auto")`` takes and
returns ``(B, C, H, W)`` float images in ``[0, 1]`` (C = 1 or 3), same shape, dtype and
device.  ``table`` selects the severity constants: ``"cifar"`` (CIFAR-10-C, as the ATOM
paper's code), ``"tinyimagenet"`` (Tiny-ImageNet-C), ``"imagenet"`` (ImageNet-C /
``imagecorruptions``) or ``"auto"`` (longest side <= 32: cifar, <= 64: tinyimagenet, else
imagenet); see :mod:`atom_plugin.corruptions.tables`.

* ``backend="torch"``: batched PyTorch on the images' device (no CPU round trip);
* ``backend="imagecorruptions"``: the reference package, per image, uint8, on the CPU.
"""
from __future__ import annotations

import torch

from .._validation import check_choice, check_images
from ._common import SeedLike
from .registry import (ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES, check_corruption,
                       check_severity, check_size, get_corruption_names)
from .tables import TABLE_CHOICES, TABLES, check_table, resolve_table

BACKENDS = ("torch", "imagecorruptions")


def corrupt(images: torch.Tensor, name: str, severity: int, backend: str = "torch",
            seed: SeedLike = None, table: str = "auto") -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to every image.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1], C in {1, 3} (gray images are corrupted
            as RGB and converted back with luma weights).
        name: one of ``ALL_CORRUPTIONS`` (the 15 of ``CORRUPTIONS`` + 4 extra).
        severity: 1..5.
        backend: ``"torch"`` or ``"imagecorruptions"``.
        seed: ``None`` (draw from torch's global RNG), an int, or a ``torch.Generator``
            (on the images' device for the torch backend), for the random corruptions.
        table: severity constants, ``"auto"`` (by image size), ``"cifar"``,
            ``"tinyimagenet"`` or ``"imagenet"``; the ``imagecorruptions`` backend has only
            ``"imagenet"`` (``"auto"`` resolves to it there).
    Returns:
        ``(B, C, H, W)`` in [0, 1], same dtype and device as ``images``.
    """
    check_images(images, "images")
    check_corruption(name)
    severity = check_severity(severity)
    check_choice(backend, "backend", BACKENDS)
    table = resolve_table(check_table(table), images.shape[2], images.shape[3], backend)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"`images` must have 1 or 3 channels to be corrupted, got {images.shape[1]}.")
    check_size(name, images.shape[2], images.shape[3], backend)
    if backend == "torch":
        from .torch_backend import corrupt_torch

        return corrupt_torch(images, name, severity, seed, table=table)
    from .reference import corrupt_reference

    return corrupt_reference(images, name, severity, seed)


__all__ = ["corrupt", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "ALL_CORRUPTIONS", "SEVERITIES", "BACKENDS",
           "TABLES", "TABLE_CHOICES", "resolve_table", "get_corruption_names"]
