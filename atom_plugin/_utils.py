"""Small shared helpers used across the package (private: not part of the public API).

* :func:`split_batch`: a DataLoader batch -> ``(images, labels or None)``;
* :func:`module_device`: the device of a module's first parameter or buffer;
* :func:`progress`: an optional tqdm bar (tqdm imported lazily);
* :func:`eval_mode`: a context manager that puts modules in eval mode and restores each
  submodule's own mode afterwards;
* :func:`collective_device`: where tensors for a ``torch.distributed`` collective live
  (CUDA for NCCL, CPU for gloo).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

__all__ = ["split_batch", "module_device", "progress", "eval_mode", "collective_device"]


def split_batch(batch: Any, what: str = "data") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` or ``(x, y, ...)`` or ``[x, y]`` -> ``(x, y)`` (``y`` is ``None`` when absent or not a tensor)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    raise TypeError(
        f"`{what}` must yield image tensors or (images, labels) batches, got {type(batch).__name__}; "
        "wrap your data in a Dataset returning (image (C,H,W) in [0,1], int label)."
    )


def module_device(module: nn.Module | None, default: str | torch.device = "cpu") -> torch.device:
    """The device of ``module``'s first parameter or buffer (``default`` if it has none)."""
    if module is not None:
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device(default)


def progress(it: Iterable, enabled: bool, desc: str, total: int | None = None, **kwargs: Any) -> Iterable:
    """``tqdm(it, ...)`` when ``enabled`` (bars are transient: ``leave=False``), else ``it``."""
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=kwargs.pop("leave", False), **kwargs)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Run the block with ``modules`` in eval mode; restore every submodule's mode after."""
    saved = [(m, m.training) for mod in modules if mod is not None for m in mod.modules()]
    for mod in modules:
        if mod is not None:
            mod.eval()
    try:
        yield
    finally:
        for m, was in saved:
            m.training = was


def collective_device(device: torch.device | str | None = None) -> torch.device:
    """The device of tensors passed to a collective: ``device`` (or the current CUDA device)
    under NCCL, the CPU under gloo or when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        if device is not None and torch.device(device).type == "cuda":
            return torch.device(device)
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
