"""Read intermediate features of any model (needed by the feature-space detectors).

:class:`FeatureTap` registers forward hooks on named submodules and returns the
model's output together with those modules' outputs, with the autograd graph intact
(so attacks can differentiate through feature-space scores).  For timm models the
default layers are the stages listed in ``model.feature_info``.

:class:`PenultimateTap` splits a classifier into "penultimate features -> final linear
layer" (the input of :func:`~atom_plugin.models.find_classifier`'s ``nn.Linear``), what
KNN, ViM, ReAct, ASH, DICE and RMD work on.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .models import unwrap_model, find_classifier

__all__ = ["FeatureTap", "PenultimateTap", "default_feature_layers"]


def default_feature_layers(model: nn.Module) -> list[str]:
    """Names (relative to ``model``) of sensible feature layers.

    timm models: the modules of ``feature_info``; models with a ``features``
    ``nn.Sequential`` (e.g. :class:`~atom_plugin.models.SmallCNN`, torchvision VGG):
    the outputs of its pooling layers and the last layer; otherwise the direct children
    except the last (classifier).  Raises ``ValueError`` if nothing fits.
    """
    inner = unwrap_model(model)
    prefix = ""
    for name, mod in model.named_modules():
        if mod is inner:
            prefix = name + "." if name else ""
            break
    info = getattr(inner, "feature_info", None)
    if info:
        names = [d["module"] for d in info] if isinstance(info, list) else list(info.module_name())
        return [prefix + n for n in names]
    feats = getattr(inner, "features", None)
    if isinstance(feats, nn.Sequential):
        idx = [i for i, m in enumerate(feats) if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
        if not idx or idx[-1] != len(feats) - 1:
            idx.append(len(feats) - 1)
        return [f"{prefix}features.{i}" for i in idx]
    children = [n for n, _ in inner.named_children()]
    if len(children) >= 2:
        return [prefix + n for n in children[:-1]]
    raise ValueError(
        f"Cannot choose feature layers for {type(inner).__name__}; pass `layers` with module names "
        f"from model.named_modules()."
    )


class FeatureTap(nn.Module):
    """``tap(x) -> (output, [features...])`` for the named submodules of ``model``.

    Args:
        model: any ``nn.Module`` (timm, RobustBench, :class:`Normalize`-wrapped, ...).
        layers: module names as in ``model.named_modules()``; default
            :func:`default_feature_layers`.

    Features keep their shapes (e.g. ``(B, C, H, W)`` for conv stages) and their
    autograd graph.  The hooks live only during ``forward``, so the model is left
    exactly as it was between calls.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        names = list(layers) if layers is not None else default_feature_layers(model)
        if not names:
            raise ValueError("`layers` is empty; give at least one module name.")
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(
                f"`layers` names unknown modules {missing}; valid names come from model.named_modules(), "
                f"e.g. {list(modules)[1:6]}."
            )
        self.layers = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        modules = dict(self.model.named_modules())
        store: dict[str, torch.Tensor] = {}
        handles = []
        for name in self.layers:
            def hook(_m, _inp, out, _name=name):
                store[_name] = out[0] if isinstance(out, (tuple, list)) else out
            handles.append(modules[name].register_forward_hook(hook))
        try:
            out = self.model(x)
        finally:
            for h in handles:
                h.remove()
        return out, [store[n] for n in self.layers]


class PenultimateTap(nn.Module):
    """``tap(x) -> (logits, features)``: the model's output and the input ``(B, D)`` of its
    final linear classifier (found by :func:`~atom_plugin.models.find_classifier`).

    ``tap.linear`` is that ``nn.Linear`` (``weight`` ``(K + R, D)``); ``tap.head(z, k)``
    applies its first ``k`` rows to features ``z``, so a detector can recompute logits from
    modified features (ReAct, ASH, DICE).  The hook lives only during ``forward`` and the
    autograd graph is kept.  Like :class:`FeatureTap`, the model is not a submodule of the
    tap's owner unless registered there.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.linear = find_classifier(model)[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        store: list[torch.Tensor] = []

        def hook(_m, inp):
            store.append(inp[0])

        handle = self.linear.register_forward_pre_hook(hook)
        try:
            out = self.model(x)
        finally:
            handle.remove()
        if not store:
            raise ValueError(
                f"The classifier {type(self.linear).__name__} of the model was not called in forward; "
                "the penultimate features cannot be read (pass a model whose last layer is its nn.Linear head)."
            )
        z = store[-1]
        return out, z.flatten(1) if z.dim() > 2 else z

    def head(self, z: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Logits ``z W[:k]^T + b[:k]`` of features ``z`` ``(B, D)``."""
        w, b = self.linear.weight, self.linear.bias
        w = w if k is None else w[:k]
        if b is None:
            return z @ w.T
        return z @ w.T + (b if k is None else b[:k])
