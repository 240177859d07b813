"""Names, severities and size limits of the corruptions (Hendrycks & Dietterich, 2019).

``CORRUPTIONS`` are the 15 common corruptions of ImageNet-C / CIFAR-10-C (the 75
candidates of the ATOM paper, Section 5.1); ``EXTRA_CORRUPTIONS`` are the 4 validation
corruptions that the official ATOM code adds (95 candidates with all 19).
"""
from __future__ import annotations

from typing import Tuple

CORRUPTIONS: Tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: Tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: Tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: Tuple[int, ...] = (1, 2, 3, 4, 5)

_SUBSETS = {
    "common": CORRUPTIONS,
    "extra": EXTRA_CORRUPTIONS,
    "validation": EXTRA_CORRUPTIONS,
    "all": ALL_CORRUPTIONS,
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:11],
    "digital": CORRUPTIONS[11:15],
}

#: Smallest image side (H and W) each corruption of the torch backend supports.  The
#: reference backend (imagecorruptions) needs at least 32 x 32 for every corruption.
MIN_SIZE = {name: 1 for name in ALL_CORRUPTIONS}
MIN_SIZE.update({
    "defocus_blur": 11,      # 21 x 21 disk kernel, reflect-101 border needs side > 10
    "pixelate": 4,           # int(0.25 * side) >= 1
    "jpeg_compression": 1,
    "glass_blur": 1,
    "frost": 1,
    "spatter": 2,
})
REFERENCE_MIN_SIZE = 32


def get_corruption_names(subset: str = "common") -> list[str]:
    """Corruption names of a subset: ``"common"`` (the 15), ``"extra"`` / ``"validation"``
    (the 4 extra), ``"all"`` (19), or a family ``"noise"``, ``"blur"``, ``"weather"``,
    ``"digital"``."""
    if subset not in _SUBSETS:
        raise ValueError(f"`subset` must be one of {sorted(_SUBSETS)}, got {subset!r}.")
    return list(_SUBSETS[subset])


def check_corruption(name, argname: str = "name") -> str:
    """Validate one corruption name; the error lists the valid names."""
    if not isinstance(name, str) or name not in ALL_CORRUPTIONS:
        raise ValueError(
            f"`{argname}` must be a corruption name, one of {list(ALL_CORRUPTIONS)}; got {name!r}."
        )
    return name


def check_severity(severity, argname: str = "severity") -> int:
    """Validate a severity: an int in 1..5."""
    import numbers

    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral):
        raise TypeError(f"`{argname}` must be an int in 1..5, got {type(severity).__name__} ({severity!r}).")
    severity = int(severity)
    if severity not in SEVERITIES:
        raise ValueError(f"`{argname}` must be an int in 1..5, got {severity}.")
    return severity


def check_size(name: str, height: int, width: int, backend: str) -> None:
    """Raise a ValueError when an image is too small for a corruption."""
    need = REFERENCE_MIN_SIZE if backend == "imagecorruptions" else MIN_SIZE[name]
    if height < need or width < need:
        raise ValueError(
            f"`images` of size {height}x{width} are too small for {name!r} with backend "
            f"{backend!r}: it needs at least {need}x{need}; upsample the images first "
            "(e.g. torch.nn.functional.interpolate)."
        )
