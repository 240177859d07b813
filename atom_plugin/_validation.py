"""Input checks shared by the public API.

Every check raises ``TypeError`` or ``ValueError`` with a sentence that names the
argument and says how to fix it.  Checks that read tensor values (range, NaN) cause a
host-device synchronisation, so they run once at API entry, never inside step loops.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def check_images(x: Any, name: str = "images", *, channels: int | None = None) -> torch.Tensor:
    """Check a batch of images: float tensor (B, C, H, W), finite, values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}.")
    if x.dim() != 4:
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W) (rank 4), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating-point tensor in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (B = 0); pass at least one image.")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"`{name}` must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)}).")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"`{name}` contains NaN values.")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"`{name}` must have values in [0, 1], got min {lo:.4g} and max {hi:.4g}; "
            "pass unnormalized images and let the model wrap normalization "
            "(atom_plugin.models.Normalize), or divide uint8 images by 255."
        )
    return x


def check_scores(s: Any, name: str = "scores") -> torch.Tensor:
    """Check a 1-D tensor of detector scores with no NaN."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B,), got {type(s).__name__}.")
    if s.dim() != 1:
        raise ValueError(f"`{name}` must have shape (B,), got shape {tuple(s.shape)}.")
    if torch.isnan(s.detach()).any():
        raise ValueError(
            f"`{name}` contains NaN ({int(torch.isnan(s.detach()).sum())} of {s.numel()}); "
            "check the model for overflow (e.g. use float32) or the inputs for NaN."
        )
    return s


def check_logits(logits: Any, name: str = "logits", *, min_classes: int = 1) -> torch.Tensor:
    """Check a (B, C) floating tensor of logits with at least ``min_classes`` columns."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B, C), got {type(logits).__name__}.")
    if logits.dim() != 2:
        raise ValueError(f"`{name}` must have shape (B, C), got shape {tuple(logits.shape)}.")
    if not logits.is_floating_point():
        raise TypeError(f"`{name}` must be floating point, got dtype {logits.dtype}.")
    if logits.shape[1] < min_classes:
        raise ValueError(f"`{name}` must have at least {min_classes} columns, got {logits.shape[1]}.")
    return logits


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check an integer (bools rejected) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).") from None
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value}.")
    return value


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """Check a finite real number within [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be a number, got {type(value).__name__} ({value!r}).") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"`{name}` must be {'>' if low_open else '>='} {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value}.")
    return value


def check_choice(value: Any, name: str, choices) -> Any:
    """Check ``value`` is one of ``choices``; the error lists the valid ones."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(map(str, choices))}, got {value!r}.")
    return value
