"""Shared machinery of the detectors that read the penultimate features and/or fit
statistics from a loader (KNN, ViM, ReAct, ASH, DICE, RMD, KLMatching).

* :class:`PenultimateDetector`: a :class:`~.base.Detector` that owns a
  :class:`~atom_plugin.features.PenultimateTap` (``_features(x) -> (logits[:, :K], z)``,
  ``_head(z) -> logits[:, :K]``), fits on any device in batches, validates **every** fit
  batch (rank, dtype, range, NaN, one image size for the whole loader), ignores samples
  with labels ``< 0`` (pytorch-ood's ``is_known``), runs in eval mode and restores every
  module's mode afterwards, and refuses images of another size than it was fitted on.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn as nn

from .._utils import eval_mode, module_device, progress, split_batch
from .._validation import check_dataset, check_images, check_int
from ..features import PenultimateTap
from .base import Detector

__all__ = ["PenultimateDetector", "iter_fit_batches"]


def iter_fit_batches(loader: Iterable, device: torch.device, *, name: str = "loader",
                     max_samples: int | None = None, show_progress: bool = False,
                     desc: str = "fit", drop_unknown: bool = True
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Validated fit batches ``(x, y)`` on ``device``: every batch is checked (images in
    [0, 1], no NaN, the same ``(C, H, W)`` as the first batch), samples with labels ``< 0``
    are dropped (kept with ``drop_unknown=False``), at most ``max_samples`` images in all.
    Raises ``ValueError`` if the loader yields no usable image."""
    if max_samples is not None:
        check_int(max_samples, "max_samples", low=1)
    check_dataset(loader, name)
    shape, n = None, 0
    for i, batch in enumerate(progress(loader, show_progress, desc)):
        x, y = split_batch(batch, name)
        check_images(x, f"{name} batch {i}")
        if shape is None:
            shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"`{name}` batch {i} has images of shape {tuple(x.shape[1:])} but earlier batches had {shape}; "
                "resize every image to the model's input size (one size per loader)."
            )
        if y is not None:
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"`{name}` batch {i}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}.")
            if drop_unknown:
                known = y >= 0
                x, y = x[known.to(x.device)], y[known]
        if max_samples is not None:
            x, y = x[: max_samples - n], (None if y is None else y[: max_samples - n])
        if x.shape[0] == 0:
            continue
        n += x.shape[0]
        yield x.to(device), (None if y is None else y.to(device).long())
        if max_samples is not None and n >= max_samples:
            break
    if n == 0:
        raise ValueError(f"`{name}` yielded no in-distribution images (labels >= 0); pass ID training data.")


def size_error(x: torch.Tensor, det) -> None:
    raise ValueError(
        f"`x` has images of shape {tuple(x.shape[1:])} but {type(det).__name__} was fitted on "
        f"{det.fit_shape}; resize the images (or refit on data of this size)."
    )


class PenultimateDetector(Detector):
    """Base of the detectors on ``penultimate features -> final linear layer``.

    Subclasses call :meth:`_fit_batches` in ``fit`` and implement ``_score`` /
    ``_attack_loss`` with :meth:`_features` and :meth:`_head`.
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None) -> None:
        super().__init__(model, num_classes)
        object.__setattr__(self, "_tap", PenultimateTap(model))  # not a submodule: model registered once
        self.fit_shape: tuple[int, ...] | None = None

    # -- features ------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits[:, :K], z)`` with ``z`` ``(B, D)`` the input of the final linear layer
        (images of another size than the fit data are refused: a shape check, no sync)."""
        if self.fit_shape is not None and tuple(x.shape[1:]) != self.fit_shape:
            size_error(x, self)
        logits, z = self._tap(x)
        return logits[:, : self.num_classes], z

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of features ``z`` (the classifier's first ``K`` rows)."""
        return self._tap.head(z, self.num_classes)

    @property
    def weight(self) -> torch.Tensor:
        """The classifier's weight rows of the ``K`` ID classes ``(K, D)``."""
        return self._tap.linear.weight[: self.num_classes]

    @property
    def bias(self) -> torch.Tensor:
        b = self._tap.linear.bias
        return torch.zeros_like(self.weight[:, 0]) if b is None else b[: self.num_classes]

    # -- fitting -------------------------------------------------------------------------
    def _fit_batches(self, loader: Iterable, *, max_samples: int | None = None, show_progress: bool = False,
                     name: str = "loader") -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """``(logits[:, :K], z, y)`` per validated fit batch, under ``no_grad`` in eval mode
        (every module's mode restored afterwards); records the image size."""
        dev = module_device(self.model)
        with eval_mode(self), torch.no_grad():
            for x, y in iter_fit_batches(loader, dev, name=name, max_samples=max_samples,
                                         show_progress=show_progress, desc=type(self).__name__):
                self.fit_shape = tuple(x.shape[1:])
                try:
                    logits, z = self._features(x)
                except RuntimeError as e:
                    raise ValueError(f"`{name}` images of shape {tuple(x.shape[1:])} do not fit the model: {e}") from e
                yield logits, z, y

