"""Severity tables: the corruption constants of CIFAR-10-C, Tiny-ImageNet-C and ImageNet-C.

Hendrycks & Dietterich (2019) published one set of constants per dataset:

* ``"cifar"``: CIFAR-10-C (``make_cifar_c.py``; the official ATOM code uses the same
  constants), made for 32 x 32 images;
* ``"tinyimagenet"``: Tiny-ImageNet-C (``make_tinyimagenet_c.py``), for 64 x 64 images;
* ``"imagenet"``: ImageNet-C as packaged by ``imagecorruptions`` (the reference backend).

``"auto"`` picks by image size: longest side <= 32 -> cifar, <= 64 -> tinyimagenet, else
imagenet.  Besides the constants, the CIFAR and Tiny-ImageNet generators differ from
``imagecorruptions`` in a few steps, which the torch backend follows per table: pixelate
upsamples with a box filter (not nearest), zoom blur trims the zoomed image centred,
elastic transform adds a random affine warp, frost scales its textures by a fixed factor
and picks one of the first five, motion blur and snow use ImageMagick's motion blur (no
early stop), snow truncates its layer to 8 bits before blurring, fog's plasma map is at
least the table's native size.  Sizes in the elastic constants are fractions of the image
height (CIFAR's code writes them for 32, Tiny-ImageNet's for 64).
"""
from __future__ import annotations

from typing import Dict, Tuple

TABLES: Tuple[str, ...] = ("cifar", "tinyimagenet", "imagenet")
TABLE_CHOICES: Tuple[str, ...] = TABLES + ("auto",)

#: the image side each table was made for
NATIVE_SIZE = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}

_CIFAR = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # (start, stop, step) of np.arange
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    # (alpha, sigma, affine) as fractions of the image height
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
}

_TINY = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
}

_IMAGENET = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    # alpha (pixels); sigma 0.01 x size and displacement 0.005 x height are fixed
    "elastic_transform": (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
}

#: table name -> corruption name -> the five severities' parameters
SEVERITY_TABLES: Dict[str, Dict[str, tuple]] = {"cifar": _CIFAR, "tinyimagenet": _TINY, "imagenet": _IMAGENET}

#: frost (CIFAR / Tiny-ImageNet generators): fixed texture scale, number of textures drawn from
FROST_SCALE = {"cifar": 0.2, "tinyimagenet": 0.3}
FROST_TEXTURES = {"cifar": 5, "tinyimagenet": 5, "imagenet": 6}

#: backends and the tables they implement
BACKEND_TABLES = {"torch": TABLES, "imagecorruptions": ("imagenet",)}


def check_table(table, argname: str = "table") -> str:
    """Validate a table name (one of ``TABLE_CHOICES``)."""
    if not isinstance(table, str) or table not in TABLE_CHOICES:
        raise ValueError(
            f"`{argname}` must be one of {list(TABLE_CHOICES)} (CIFAR-10-C, Tiny-ImageNet-C, ImageNet-C "
            f"constants, or 'auto' by image size); got {table!r}."
        )
    return table


def resolve_table(table: str, height: int, width: int, backend: str = "torch") -> str:
    """The concrete table for images of ``height`` x ``width``: ``"auto"`` -> cifar when
    the longest side is <= 32, tinyimagenet when <= 64, else imagenet.  The reference
    backend (``imagecorruptions``) has only the imagenet table: ``"auto"`` resolves to it,
    another table is an error."""
    check_table(table)
    if table == "auto":
        if backend == "imagecorruptions":
            return "imagenet"
        side = max(int(height), int(width))
        return "cifar" if side <= 32 else "tinyimagenet" if side <= 64 else "imagenet"
    have = BACKEND_TABLES.get(backend, TABLES)
    if table not in have:
        raise ValueError(
            f"backend {backend!r} has no {table!r} table (it implements {list(have)}); use backend='torch' "
            f"for table={table!r}, or table='imagenet'."
        )
    return table


def table_params(table: str, name: str, severity: int):
    """The parameters of corruption ``name`` at ``severity`` in the concrete ``table``;
    a ValueError when the table has no entry for the corruption."""
    entries = SEVERITY_TABLES.get(table)
    if entries is None:
        raise ValueError(f"`table` must be one of {list(TABLES)} once resolved; got {table!r}.")
    if name not in entries:
        raise ValueError(
            f"table {table!r} has no entry for corruption {name!r} (it has {sorted(entries)}); "
            "choose another table or corruption."
        )
    return entries[name][severity - 1]


__all__ = ["TABLES", "TABLE_CHOICES", "SEVERITY_TABLES", "NATIVE_SIZE", "check_table", "resolve_table",
           "table_params"]
