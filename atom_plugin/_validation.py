"""Input checks shared by the public API.

Every check raises ``TypeError`` or ``ValueError`` with a sentence that names the
argument and says how to fix it.  Checks that read tensor values (range, NaN) cause a
host-device synchronisation, so they run once at API entry, never inside step loops.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.utils.data


_CHANNEL_COUNTS = (1, 3, 4)


def expected_channels(model: Any) -> int | None:
    """The number of input channels ``model`` expects, or ``None`` if it cannot be told.

    Read from the ``mean`` of an :class:`atom_plugin.models.Normalize` (outermost first)
    when it has one value per channel, else from the first ``nn.Conv2d`` (``in_channels``)
    of the module tree, which is also the patch embedding of a ViT.  Works through ``.model`` / ``.module`` wrappers and
    detectors (their ``.model``).
    """
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        model = getattr(model, "model", None)
        if not isinstance(model, nn.Module):
            return None
    from_norm = None
    for m in model.modules():
        mean = getattr(m, "mean", None)
        if type(m).__name__ == "Normalize" and isinstance(mean, torch.Tensor) and mean.dim() == 4:
            from_norm = int(mean.shape[1])
            break
    if from_norm is not None and from_norm > 1:
        return from_norm
    for m in model.modules():  # a one-value mean broadcasts over any channel count: ask the first conv
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return from_norm


def expected_dtype(model: Any) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (or buffer), ``None`` if none."""
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        model = getattr(model, "model", None)
        if not isinstance(model, nn.Module):
            return None
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


#: the range error's fix when a torchattacks attack normalizes (``set_normalization_used``)
ATTACK_NORMALIZES_HINT = ("this attack normalizes its inputs itself (set_normalization_used), so pass the "
                          "images before normalization, in [0, 1]")


def check_images(x: Any, name: str = "images", *, channels: int | None = None, model: Any = None,
                 dtype: torch.dtype | None = None, range_hint: str | None = None) -> torch.Tensor:
    """Check a batch of images: float tensor (B, C, H, W), finite, values in [0, 1].

    Args:
        channels: the required channel count; ``model``: read ``channels`` (via
            :func:`expected_channels`) and ``dtype`` (via :func:`expected_dtype`) from it.
        dtype: the required floating dtype (the model's); without ``dtype``/``model`` any
            floating dtype passes (a float64 model takes float64 images).
        range_hint: the fix the [0, 1] range error suggests (default: pass the images
            before normalization; see :data:`ATTACK_NORMALIZES_HINT`).

    The channel/dtype rule: images have the model's channel count and dtype; a (B, H, W, C)
    tensor is refused with the ``permute(0, 3, 1, 2)`` fix, float64 images for a float32 model
    with ``.float()``.  Entry points pass ``model=`` so both are checked.
    """
    if isinstance(x, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        raise TypeError(f"`{name}` must be a tensor of images (B, C, H, W), got a {type(x).__name__}; "
                        "iterate it and pass the image batches.")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}.")
    if x.dim() != 4:
        hint = ("add a batch dimension with x.unsqueeze(0) for a single image; if you passed a tensor where a "
                "Dataset or DataLoader is expected, wrap it: torch.utils.data.TensorDataset(x, y)"
                if x.dim() == 3 else "images are (B, C, H, W)")
        raise ValueError(f"`{name}` must have shape (B, C, H, W) (rank 4), got shape {tuple(x.shape)}; {hint}.")
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating-point tensor in [0, 1], got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (B = 0); pass at least one image.")
    if model is not None:
        channels = expected_channels(model) if channels is None else channels
        dtype = expected_dtype(model) if dtype is None else dtype
    c_last = x.shape[-1]
    if channels is not None:
        if x.shape[1] != channels:
            fix = ("it looks like (B, H, W, C): use x.permute(0, 3, 1, 2)" if c_last == channels
                   else "grayscale to RGB: x.expand(-1, 3, -1, -1)" if x.shape[1] == 1 and channels == 3
                   else "pass images with the model's channel count")
            raise ValueError(f"`{name}` must have {channels} channels (the model's), got {x.shape[1]} "
                             f"(shape {tuple(x.shape)}); {fix}.")
    elif x.shape[1] not in _CHANNEL_COUNTS and c_last in _CHANNEL_COUNTS:
        raise ValueError(f"`{name}` looks like (B, H, W, C) (shape {tuple(x.shape)}); images are (B, C, H, W): "
                         "use x.permute(0, 3, 1, 2).")
    if dtype is not None and x.dtype != dtype:
        fix = "x.float()" if dtype == torch.float32 else f"x.to({dtype})"
        raise TypeError(f"`{name}` has dtype {x.dtype} but the model computes in {dtype}; convert with {fix}.")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"`{name}` contains NaN values.")
    if lo < 0.0 or hi > 1.0:
        fix = range_hint or ("pass the images before normalization (normalization belongs inside the model, "
                             "atom_plugin.models.Normalize) or divide uint8 images by 255")
        raise ValueError(f"`{name}` must have values in [0, 1], got min {lo:.4g} and max {hi:.4g}; {fix}.")
    return x


def check_dataset(data: Any, name: str, *, labels: bool = True) -> Any:
    """Refuse a raw tensor (or array) where a Dataset or DataLoader is expected, with the fix."""
    import numpy as np

    if isinstance(data, (torch.Tensor, np.ndarray)):
        wrap = "TensorDataset(x, y)" if labels else "TensorDataset(x)"
        raise TypeError(
            f"`{name}` must be a Dataset or DataLoader{' of (image, label) pairs' if labels else ''}, got a "
            f"{type(data).__name__} of shape {tuple(data.shape)}; wrap it: torch.utils.data.{wrap}."
        )
    if data is None or isinstance(data, (str, bytes, int, float)):
        raise TypeError(f"`{name}` must be a Dataset or DataLoader, got {type(data).__name__}.")
    return data


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
