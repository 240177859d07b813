"""Model wrappers: a normalization layer so every API takes images in [0, 1], a K+R-way
reject head for timm / RobustBench / plain modules, and a small CNN for 32x32 images.

Conventions
-----------
* Every model handled by atom_plugin maps images ``(B, C, H, W)`` in ``[0, 1]`` to logits
  ``(B, K + R)``: ``K`` in-distribution classes followed by ``R >= 0`` reject (OOD) classes.
* :func:`with_reject_head` records ``K`` and ``R`` on the returned model as
  ``model.ood_num_classes`` and ``model.ood_num_reject``; :func:`head_spec` reads them back.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ._validation import check_int

__all__ = ["Normalize", "SmallCNN", "with_reject_head", "head_spec", "find_classifier"]


class Normalize(nn.Module):
    """Wrap ``model`` so it takes images in [0, 1] and normalizes them itself.

    ``forward(x)`` computes ``model((x - mean) / std)`` with per-channel ``mean``/``std``.
    The wrapped model stays reachable as ``.model``; ``mean``/``std`` are buffers of shape
    ``(1, C, 1, 1)`` that follow ``.to(device)``; ``len(mean)`` is the number of input
    channels the model expects (:func:`atom_plugin._validation.expected_channels`).

    ``input_size`` (``int`` or ``(H, W)``): resize every input bilinearly to this size
    first (differentiable, so attacks still work on the original resolution).  This is the
    pretrained-resolution path for e.g. a ViT pretrained at 224x224 used on 32x32 CIFAR
    images: keep the model at its pretrained ``img_size`` and resize the images, instead of
    building it with ``img_size=32`` (which resamples a 14x14 position embedding to 2x2
    tokens).  ``create_timm_model(..., input_size=224)`` sets it.

    Wrapping a model that already normalizes (it contains a ``Normalize``, e.g. the result
    of ``create_timm_model``) raises ``ValueError``: that would normalize twice.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
        inner_norm = next((n for n, m in model.named_modules() if isinstance(m, Normalize)), None)
        if inner_norm is not None or getattr(unwrap_model(model), "ood_normalizes_inputs", False):
            where = "" if inner_norm is None else " (it is an atom_plugin.models.Normalize)" if inner_norm == "" \
                else f" (it contains an atom_plugin.models.Normalize at {inner_norm!r})"
            raise ValueError(
                f"`model` already normalizes its inputs{where}; wrapping it in Normalize again would normalize twice. "
                "Pass it as it is: create_timm_model and load_robustbench_model return models that take images "
                "in [0, 1]."
            )
        if input_size is not None:
            size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise ValueError(f"`input_size` must be an int or (height, width) of positive ints, "
                                 f"got {input_size!r}.")
            input_size = size
        self.input_size = input_size
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(
                f"`mean` and `std` must have one value per channel and the same length, got "
                f"{mean_t.numel()} and {std_t.numel()}."
            )
        if not bool(torch.all(std_t > 0)):
            raise ValueError(f"`std` must be positive, got {std_t.tolist()}.")
        self.model = model
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def _check_input(self, x: torch.Tensor) -> None:
        """The channel/dtype rule where every image enters a wrapped model (shapes and dtypes
        only: no host-device synchronisation).  A per-channel mean would broadcast over a
        1-channel image or the last axis of a (B, H, W, C) tensor and compute garbage."""
        c = self.mean.shape[1]
        if x.dim() != 4:
            raise ValueError(f"the model's input must have shape (B, C, H, W), got shape {tuple(x.shape)}.")
        if c > 1 and x.shape[1] != c:
            fix = ("it looks like (B, H, W, C): use x.permute(0, 3, 1, 2)" if x.shape[-1] == c
                   else "grayscale to RGB: x.expand(-1, 3, -1, -1)" if x.shape[1] == 1 and c == 3
                   else "pass images with the model's channel count")
            raise ValueError(f"the model takes {c}-channel images (its Normalize has {c} means), got {x.shape[1]} "
                             f"channels (shape {tuple(x.shape)}); {fix}.")
        if x.dtype == torch.float64 and self.mean.dtype != torch.float64:
            raise TypeError(f"the model computes in {self.mean.dtype} but the images are float64; convert them "
                            "with x.float() (or the model with model.double()).")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` for ``x`` of shape (B, C, H, W) in [0, 1]."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, K+R)
        self._check_input(x)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = torch.nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.model(self.normalize(x))

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}" if self.input_size is not None else ""


class SmallCNN(nn.Module):
    """A small VGG-style CNN for 32x32 inputs (about 0.3 M parameters at ``width=32``).

    Used by the embedded demo and the tests; any timm or RobustBench model works in its
    place.  Layout: ``features`` (three conv stages, each conv-BN-ReLU x2 + pooling),
    then ``fc`` (the classifier).  Input ``(B, in_chans, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", low=1)
        check_int(in_chans, "in_chans", low=1)
        check_int(width, "width", low=1)
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            ]
            layers.append(nn.MaxPool2d(2) if i < 2 else nn.AdaptiveAvgPool2d(1))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.num_classes = num_classes
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The innermost model under :class:`Normalize` and DDP-style ``.module`` wrappers."""
    while True:
        if isinstance(model, Normalize):
            model = model.model
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def find_classifier(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """Locate the final linear classifier of ``model``.

    Returns ``(parent, attribute_name, linear)`` so the caller can replace it with
    ``setattr(parent, attribute_name, new_linear)``.  The classifier is the last
    ``nn.Linear`` registered in the module tree (timm's ``get_classifier()`` is
    preferred when it returns an ``nn.Linear``).
    """
    inner = unwrap_model(model)
    candidates = [(n, m) for n, m in inner.named_modules() if isinstance(m, nn.Linear)]
    if hasattr(inner, "get_classifier"):
        head = inner.get_classifier()
        if isinstance(head, (tuple, list)):  # timm distilled models: (head, head_dist)
            head = head[0] if head else None
        named = [(n, m) for n, m in candidates if m is head]
        if named:
            candidates = named
        elif isinstance(head, nn.Module) and hasattr(inner, "reset_classifier"):
            # A timm model whose head is not a Linear (e.g. nn.Identity after num_classes=0):
            # the last Linear would be inside the backbone (a ViT MLP), never the classifier.
            candidates = []
    if not candidates:
        raise ValueError(
            f"`model` ({type(inner).__name__}) has no recognisable classifier: no nn.Linear layer found. "
            "Pass a timm model, a RobustBench model, or a module whose last layer is nn.Linear "
            "(or replace the head yourself and call with_reject_head on the result)."
        )
    name, linear = candidates[-1]
    parent_name, _, attr = name.rpartition(".")
    parent = inner.get_submodule(parent_name) if parent_name else inner
    return parent, attr, linear


def _classifiers(inner: nn.Module):
    """``[(parent, attr, linear), ...]``: the Linear heads of ``inner`` (two for timm's distilled
    models, ``head`` and ``head_dist``), or ``None`` when ``get_classifier()`` is not Linear."""
    head = inner.get_classifier() if hasattr(inner, "get_classifier") else None
    if isinstance(head, (tuple, list)) and head and all(isinstance(h, nn.Linear) for h in head):
        named = {id(m): n for n, m in inner.named_modules()}
        out = []
        for h in head:
            name = named[id(h)]
            parent_name, _, attr = name.rpartition(".")
            out.append((inner.get_submodule(parent_name) if parent_name else inner, attr, h))
        return out
    if hasattr(inner, "reset_classifier") and isinstance(head, nn.Module) and not isinstance(head, nn.Linear):
        return None
    return [find_classifier(inner)]


def with_reject_head(model: nn.Module, num_classes: int, num_reject: int = 1, *,
                     replace_head: bool = False) -> nn.Module:
    """Give ``model`` a ``num_classes + num_reject``-way linear head, keeping the backbone.

    Works on timm models (the head found through ``get_classifier()``; distilled models
    such as ``deit_tiny_distilled_patch16_224`` get both heads extended), RobustBench
    models and any ``nn.Module`` whose last layer is ``nn.Linear``, also under
    :class:`Normalize`.  The model is modified in place and returned.  Backbone weights are
    untouched.  What happens to the old head depends on its number of outputs:

    * ``num_classes`` (a K-way classifier): its weights are copied into the first ``K``
      rows, so a pretrained classifier keeps its accuracy; the ``R`` new rows start from
      PyTorch's default initialisation;
    * ``num_classes + num_reject`` (the model already has its K+R head, e.g. a trained
      ATOM model rebuilt from a state dict): the head is kept as it is;
    * anything else: ``ValueError``, because the trained head would be discarded
      (``with_reject_head(ten_way_model, 5)``); pass ``replace_head=True`` to start a new
      head on purpose (e.g. fine-tuning an ImageNet model on 10 classes).

    Args:
        model: the classifier, taking images in [0, 1] (wrap with :class:`Normalize` if not).
        num_classes: ``K >= 1``, the number of in-distribution classes.
        num_reject: ``R >= 0`` reject classes (1 for ATOM/NTOM/ROWL, e.g. 5 for SOFL).
        replace_head: allow discarding a head whose size is neither ``K`` nor ``K + R``.

    Returns:
        ``model`` with logits of shape ``(B, K + R)`` and ``model.ood_num_classes = K``,
        ``model.ood_num_reject = R``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
    check_int(num_classes, "num_classes", low=1)
    check_int(num_reject, "num_reject", low=0)
    if not isinstance(replace_head, bool):
        raise TypeError(f"`replace_head` must be True or False, got {replace_head!r}.")
    total = num_classes + num_reject
    inner = unwrap_model(model)
    heads = _classifiers(inner)
    if heads is None:
        # timm model without a Linear head (headless, or a non-Linear head): let timm build one.
        inner.reset_classifier(total)
        model.ood_num_classes = num_classes
        model.ood_num_reject = num_reject
        return model
    sizes = {old.out_features for _, _, old in heads}
    if sizes == {total}:
        pass  # already K+R: keep the (trained) head
    elif sizes != {num_classes} and not replace_head:
        raise ValueError(
            f"`model`'s classifier has {'/'.join(map(str, sorted(sizes)))} outputs, neither num_classes={num_classes} "
            f"nor num_classes + num_reject={total}, so its trained weights would be discarded; pass the model's own "
            "number of classes as `num_classes`, or replace_head=True to start a new head on purpose."
        )
    else:
        for parent, attr, old in heads:
            new = nn.Linear(old.in_features, total, bias=True)
            new = new.to(device=old.weight.device, dtype=old.weight.dtype)
            if old.out_features == num_classes:
                with torch.no_grad():
                    new.weight[:num_classes].copy_(old.weight)
                    if old.bias is not None:
                        new.bias[:num_classes].copy_(old.bias)
                    else:
                        new.bias[:num_classes].zero_()
            setattr(parent, attr, new)
    inner = unwrap_model(model)
    if hasattr(inner, "num_classes"):
        inner.num_classes = total  # timm keeps this in sync with the head
    model.ood_num_classes = num_classes
    model.ood_num_reject = num_reject
    return model


def head_spec(model: nn.Module, num_classes: int | None = None) -> tuple[int, int]:
    """``(K, R)`` for ``model``: from ``num_classes`` if given, else from the attributes
    set by :func:`with_reject_head` (a plain K-way model with no such attributes needs
    ``num_classes``)."""
    total = None
    try:
        total = find_classifier(model)[2].out_features
    except ValueError:
        pass
    if num_classes is not None:
        check_int(num_classes, "num_classes", low=1)
        if total is not None and total < num_classes:
            raise ValueError(f"`num_classes`={num_classes} exceeds the model's {total} outputs.")
        return num_classes, (total - num_classes) if total is not None else 0
    k = getattr(model, "ood_num_classes", None)
    if k is None:
        k = getattr(unwrap_model(model), "ood_num_classes", None)
    if k is None:
        if total is None:
            raise ValueError("Cannot tell the number of classes of `model`; pass `num_classes`.")
        return total, 0
    r = getattr(model, "ood_num_reject", getattr(unwrap_model(model), "ood_num_reject", 0))
    return int(k), int(r)
