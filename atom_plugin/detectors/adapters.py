"""Attack third-party detectors: pytorch-ood 0.4.0 detectors and OpenOOD postprocessors.

:func:`from_pytorch_ood` turns any of pytorch-ood's 35 detector classes into a
:class:`~.score_fn.ScoreDetector` (scores already higher = more OOD, so no sign change):

1. it refuses, with a one-sentence reason, a detector that cannot work on an image
   classifier (:data:`PYTORCH_OOD_REFUSED`);
2. it fits the detector on ``fit_loader`` when it needs fitting (every batch validated:
   range, NaN, one image size; the model in eval mode, its modes restored; bare-image
   batches get the classifier's predictions as labels);
3. it scores through the detector's representation method (``predict_logits`` on
   ``model(x)``, ``predict_features`` on ``det.encoder(x)``, ``predict_feature_maps`` on
   ``det.backbone(x)``, else ``predict``) with every method the class decorates (a
   ``torch.no_grad`` decorator; 26 such methods in 0.4.0) replaced by its undecorated
   ``__wrapped__`` for the duration of the call, so no decorator cuts the gradient;
4. where pytorch-ood detaches inside the method itself (``.data``, ``.detach()``, an inline
   ``no_grad``, scikit-learn), a differentiable re-statement of the same formula on the
   detector's fitted attributes is used (:data:`_WHITE_BOX`: Mahalanobis, MahalanobisODIN,
   MultiMahalanobis, GMM, ViM, KNN, NCI, PNML, ODIN), accepted only if it reproduces
   pytorch-ood's scores on the probe images (relative 1e-4);
5. a probe decides: a finite, nonzero input gradient -> white-box (except the classes in
   :data:`PYTORCH_OOD_BLACK_BOX`, whose gradient is unreliable); otherwise the returned
   detector has ``differentiable = False`` (black-box: ``evaluate`` attacks it with a
   score-only attack).  ``detector.adapter_mode`` is ``"white-box"`` or ``"black-box"``.

:func:`from_openood` wraps an object with ``postprocess(net, data) -> (pred, conf)``
(OpenOOD postprocessors: ``conf`` is a confidence, higher = more ID, computed under
``torch.no_grad``) as a black-box detector reporting ``-conf``, after
``setup(net, id_loader_dict, ood_loader_dict)`` on dict batches ``{"data", "label"}``.

:func:`pytorch_ood_detector` builds any of the 35 classes on one of our classifiers
(penultimate features as ``encoder``, the final linear layer as ``head``), as used by the
tests and ``benchmarks/bench_detectors.py``.
"""
from __future__ import annotations

import contextlib
import inspect
import types
import warnings
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._utils import eval_mode, module_device
from ..features import PenultimateTap
from ._fitting import iter_fit_batches
from .score_fn import ScoreDetector

__all__ = ["from_pytorch_ood", "from_openood", "pytorch_ood_detector", "PYTORCH_OOD_CLASSES",
           "PYTORCH_OOD_REFUSED", "PYTORCH_OOD_BLACK_BOX"]

#: The 35 detector classes of pytorch-ood 0.4.0 (``pytorch_ood.detector``).
PYTORCH_OOD_CLASSES = (
    "ASH", "DICE", "EnergyBased", "Entropy", "GEN", "GMM", "GradNorm", "GradUncertainty", "Gram", "KLMatching",
    "KNN", "LTS", "MCD", "MCM", "Mahalanobis", "MahalanobisODIN", "MaxLogit", "MaxSoftmax", "MultiMahalanobis",
    "NACUE", "NCI", "NNGuide", "ODIN", "OpenMax", "PNML", "RMD", "RankFeat", "ReAct", "SCALE", "SHE",
    "TemperatureScaling", "VRA", "ViM", "WeightedEBO", "fDBD",
)

#: Classes refused by :func:`from_pytorch_ood`, with the reason (one sentence).
PYTORCH_OOD_REFUSED = {
    "MCM": "MCM scores image features against the text embeddings of a vision-language model (CLIP), and an image "
           "classifier has no text encoder to produce them.",
}


#: Classes whose gradient exists on some inputs but not reliably: adapted as black-box.
PYTORCH_OOD_BLACK_BOX = {
    "RankFeat": "the gradient of its per-image SVD is NaN wherever two singular values coincide (common in ReLU "
                "feature maps), so gradient attacks are unreliable.",
}


# -- calling pytorch-ood without its no_grad decorators -------------------------------------
def _decorated_methods(det) -> dict[str, Callable]:
    """``{name: undecorated function}`` for every method of ``type(det)`` carrying a
    decorator's ``__wrapped__`` (``torch.no_grad``, pytorch-ood's device wrapper)."""
    out = {}
    for name in dir(type(det)):
        if name.startswith("__"):
            continue
        raw = inspect.getattr_static(type(det), name, None)
        static = isinstance(raw, staticmethod)
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if isinstance(raw, classmethod) or not callable(fn) or not hasattr(fn, "__wrapped__"):
            continue
        base = inspect.unwrap(fn)
        out[name] = base if static else types.MethodType(base, det)
    return out


@contextlib.contextmanager
def _grads_kept(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``.grad`` afterwards (some pytorch-ood detectors call
    ``loss.backward()``, e.g. MahalanobisODIN, which would accumulate into the model)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


@contextlib.contextmanager
def _undecorated(det) -> Iterator[None]:
    """Within the block, ``det.<method>`` resolves to the undecorated methods (instance
    attributes shadowing the class's; removed afterwards)."""
    patched = _decorated_methods(det)
    saved = {n: det.__dict__[n] for n in patched if n in det.__dict__}
    det.__dict__.update(patched)
    try:
        yield
    finally:
        for n in patched:
            det.__dict__.pop(n, None)
        det.__dict__.update(saved)


def _representation_fn(det, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scoring path through the representation method (skipping ``predict``, which
    some classes wrap in an inline ``no_grad``, e.g. ViM and NNGuide)."""
    from pytorch_ood.api import FeatureMapsDetector, FeaturesDetector, LogitsDetector

    if isinstance(det, LogitsDetector):
        net = det.model if getattr(det, "model", None) is not None else model
        return lambda x: det.predict_logits(net(x))
    if isinstance(det, FeaturesDetector) and callable(getattr(det, "encoder", None)) and \
            type(det).predict_features is not FeaturesDetector.predict_features:
        return lambda x: det.predict_features(det.encoder(x))
    if isinstance(det, FeatureMapsDetector) and callable(getattr(det, "backbone", None)):
        return lambda x: det.predict_feature_maps(det.backbone(x))
    return det.predict


# -- differentiable re-statements where pytorch-ood detaches inside the method ----------------
def _maha_scores(z, mu, precision):
    z = z.reshape(z.shape[0], z.shape[1], -1).mean(2)
    c = z[:, None, :] - mu[None]
    return -0.5 * ((c @ precision) * c).sum(2)  # (B, K), pytorch-ood's "term_gau"


def _wb_mahalanobis(det, model):
    return lambda x: -_maha_scores(det.encoder(x), det.mu, det.precision).amax(1)


def _wb_mahalanobis_odin(det, model):
    base = det._base

    def fn(x):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = _maha_scores(base.encoder(xg).flatten(1), base.mu, base.precision)
            centered = base.encoder(xg).flatten(1) - base.mu[s.argmax(1)]
            loss = (0.5 * (centered @ base.precision * centered).sum(1)).mean()
            (g,) = torch.autograd.grad(loss, xg)
        g = g.sign()
        if det.norm_std:
            g = g / torch.tensor(det.norm_std, dtype=g.dtype, device=g.device).view(1, -1, 1, 1)
        return -_maha_scores(base.encoder(x - det.eps * g), base.mu, base.precision).amax(1)
    return fn


def _wb_multi_mahalanobis(det, model):
    def fn(x):
        total = 0.0
        for i in range(len(det.model)):
            z = nn.Sequential(*det.model[: i + 1])(x).mean(dim=(2, 3))
            total = total + det.alpha[i] * -_maha_scores(z, det.mu[i], det.precision[i]).amax(1)
        return total
    return fn


def _wb_gmm(det, model):
    import math

    def fn(x):
        z = det.encoder(x).to(det._mu.dtype)
        diff = z.unsqueeze(0) - det._mu.unsqueeze(1)
        mahal = (diff @ det._precision * diff).sum(dim=2).T
        ll = det._log_weights - 0.5 * (mahal + det._log_det + z.shape[1] * math.log(2 * math.pi))
        return -torch.logsumexp(ll, dim=1).float()
    return fn


def _wb_vim(det, model):
    def fn(x):
        z = det.encoder(x).float()
        energy = torch.logsumexp(z @ det.w.T + det.b, dim=-1)
        return det.alpha * ((z - det.u) @ det.principal_subspace).norm(dim=-1) - energy
    return fn


def _wb_knn(det, model):
    bank = torch.as_tensor(det.knn._fit_X, dtype=torch.float32, device=module_device(model))

    def fn(x):
        z = det.encoder(x)
        z = z / z.norm(dim=1, keepdim=True).clamp(min=1e-12) if det.normalize else z
        d = torch.cdist(z, bank.to(z.device), compute_mode="donot_use_mm_for_euclid_dist")
        return d.topk(det.k, dim=1, largest=False).values[:, -1]
    return fn


def _wb_nci(det, model):
    def fn(x):
        z = det.encoder(x).float()
        c = z - det.global_mean
        w = det.head.weight[det.head(z).argmax(dim=1)]
        p = (c * w).sum(1) / c.pow(2).sum(1).sqrt()
        return -p if det.alpha <= 0 else -p - det.alpha * z.abs().sum(1)
    return fn


def _wb_pnml(det, model):
    def fn(x):
        z = F.normalize(det.encoder(x).float(), p=2, dim=1)
        probs = torch.softmax(det.head(z), dim=1).clamp(min=det.eps, max=1.0 - det.eps)
        proj = (z @ det._feature_projector * z).sum(dim=1)
        g = (proj / (1.0 + proj)).unsqueeze(1)
        regret = torch.log((probs / (probs + (1.0 - probs) * probs.pow(g))).sum(dim=1))
        return regret / torch.log(torch.tensor(float(probs.shape[1]), device=z.device))
    return fn


def _wb_odin(det, model):
    from pytorch_ood.detector import odin_preprocessing

    def fn(x):
        x_hat = odin_preprocessing(model=det.model, x=x, eps=det.eps, criterion=det.criterion,
                                   temperature=det.temperature, norm_std=det.norm_std)
        x_hat = x + (x_hat - x).detach()  # the sign direction is piecewise constant: exact gradient a.e.
        return -(det.model(x_hat) / det.temperature).softmax(dim=1).amax(dim=1)
    return fn


_WHITE_BOX = {"Mahalanobis": _wb_mahalanobis, "MahalanobisODIN": _wb_mahalanobis_odin,
              "MultiMahalanobis": _wb_multi_mahalanobis, "GMM": _wb_gmm, "ViM": _wb_vim, "KNN": _wb_knn,
              "NCI": _wb_nci, "PNML": _wb_pnml, "ODIN": _wb_odin}


# -- fitting -------------------------------------------------------------------------------------
class _FitLoader:
    """Re-iterable view of a loader: validated ``(x, y)`` batches on ``device``; bare-image
    batches get the classifier's predictions as labels (pytorch-ood's ``fit`` needs ``(x, y)``)."""

    def __init__(self, loader: Iterable, model: nn.Module, num_classes: int | None, device: torch.device) -> None:
        self.loader, self.model, self.k, self.device = loader, model, num_classes, device
        self.first: torch.Tensor | None = None

    def __len__(self) -> int:  # pytorch-ood's Gram.fit asks for it
        return len(self.loader)

    def __iter__(self):
        for x, y in iter_fit_batches(self.loader, self.device, name="fit_loader", drop_unknown=False):
            if self.first is None:
                self.first = x[:4]
            if y is None:
                with torch.no_grad():
                    y = self.model(x)[:, : self.k].argmax(dim=1)
            yield x, y


def _fit(det, model: nn.Module, loader: Iterable, num_classes: int | None) -> torch.Tensor | None:
    wrapped = _FitLoader(loader, model, num_classes, module_device(model))
    with eval_mode(model), _grads_kept(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            det.fit(wrapped)
        except (ValueError, TypeError):
            raise
        except Exception as e:  # pytorch-ood asserts (e.g. every class 0..K-1 must occur)
            raise ValueError(f"pytorch-ood {type(det).__name__}.fit failed on `fit_loader` ({type(e).__name__}"
                             f"{': ' + str(e) if str(e) else ''}); it needs labelled ID data in which every class "
                             "0..K-1 occurs.") from e
    return wrapped.first


def _probe_scores(fn, x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    xg = x.detach().clone().requires_grad_(with_grad)
    with torch.enable_grad() if with_grad else contextlib.nullcontext():
        s = fn(xg)
        if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0],):
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"the detector returned shape {shape} for {x.shape[0]} images; it must score each "
                             "image with one value (segmentation-style outputs are not supported).")
        if not with_grad or not s.requires_grad:
            return s.detach(), None
        (g,) = torch.autograd.grad(s.float().sum(), xg, allow_unused=True)
    return s.detach(), g


def _has_gradient(g: torch.Tensor | None) -> bool:
    return g is not None and bool(torch.isfinite(g).all()) and bool((g.flatten(1).abs().sum(1) > 0).all())


def from_pytorch_ood(det: Any, model: nn.Module, fit_loader: Iterable | None = None, *,
                     num_classes: int | None = None, probe: torch.Tensor | None = None) -> ScoreDetector:
    """Adapt a pytorch-ood detector to the :class:`~.base.Detector` contract.

    Args:
        det: an instance of a ``pytorch_ood.detector`` class (built on ``model`` or on
            parts of it, e.g. ``encoder=`` its penultimate features).
        model: the classifier, images in [0, 1] -> logits (used for ``classify``, for
            logits detectors built with ``model=None``, and to label bare-image batches).
        fit_loader: ID training data, batches ``(x, y)`` or ``x`` in [0, 1]; required
            when the class needs fitting (``det.requires_fit``) and is not fitted yet.
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
        probe: a few images ``(B, C, H, W)`` in [0, 1] to decide white-/black-box
            (default: 2 fit images and 2 uniform-noise images of their size, 3x32x32
            without a fit loader).  A NaN or zero gradient on any probe image -> black-box.

    Returns a :class:`~.score_fn.ScoreDetector` with ``differentiable`` set by the probe,
    ``adapter_mode`` (``"white-box"`` / ``"black-box"``) and ``source`` (``det``).
    Raises ``ValueError`` (one sentence) for a refused class or an unusable setup.
    """
    try:
        from pytorch_ood.api import Detector as PoodDetector, GradientDetector
    except ImportError as e:  # pragma: no cover - pytorch-ood is an optional dependency
        raise ImportError("from_pytorch_ood needs pytorch-ood: pip install pytorch-ood") from e
    if not isinstance(det, PoodDetector):
        raise TypeError(f"`det` must be a pytorch_ood.detector instance, got {type(det).__name__}.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be the nn.Module classifier, got {type(model).__name__}.")
    name = type(det).__name__
    if name in PYTORCH_OOD_REFUSED and getattr(det, "text_embeddings", None) is None:
        raise ValueError(f"pytorch-ood {name} is refused: {PYTORCH_OOD_REFUSED[name]}")
    det.to(module_device(model))
    first = None
    if fit_loader is not None and det.requires_fit:
        first = _fit(det, model, fit_loader, num_classes)
    if first is None and fit_loader is not None and probe is None:  # no fit needed: still probe at its size
        first = next(iter_fit_batches(fit_loader, module_device(model), name="fit_loader", drop_unknown=False))[0][:4]
    if probe is None:  # ID images (the first fit images) and uniform noise of their size
        shape = tuple(first.shape[1:]) if first is not None else (3, 32, 32)
        noise = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
        probe = noise if first is None else torch.cat([first[:2], noise.to(first.device)])
    probe = probe.to(module_device(model))

    def generic(x):
        with _undecorated(det):
            return _representation_fn(det, model)(x)

    with eval_mode(model), _grads_kept(model):
        try:
            ref, g = _probe_scores(generic, probe, with_grad=True)
        except Exception as e:  # pytorch-ood's RequiresFittingException and friends
            if "fit" in type(e).__name__.lower() or "fit" in str(e).lower():
                raise ValueError(f"pytorch-ood {name} must be fitted: pass `fit_loader` (in-distribution training "
                                 "data) to from_pytorch_ood.") from e
            raise ValueError(f"pytorch-ood {name} cannot score the probe images {tuple(probe.shape)}: {e}") from e
        fn, mode = generic, "white-box" if _has_gradient(g) and name not in PYTORCH_OOD_BLACK_BOX else "black-box"
        if mode == "black-box" and name in _WHITE_BOX:
            candidate = _WHITE_BOX[name](det, model)
            s, g2 = _probe_scores(candidate, probe, with_grad=True)
            if _has_gradient(g2) and torch.allclose(s.double(), ref.double(), rtol=1e-4,
                                                    atol=1e-4 * max(ref.abs().max().item(), 1.0)):
                fn, mode = candidate, "white-box"
    def score_fn(x, _fn=fn):
        with _grads_kept(model):
            return _fn(x)

    out = ScoreDetector(score_fn, model=model, num_classes=num_classes, differentiable=mode == "white-box",
                        needs_input_grad=isinstance(det, GradientDetector) or name == "MahalanobisODIN")
    out.adapter_mode = mode
    object.__setattr__(out, "source", det)
    return out


class _DictLoader:
    """OpenOOD's loader format: ``{"data": images, "label": labels}`` batches (validated)."""

    def __init__(self, loader: Iterable, net: nn.Module, device: torch.device) -> None:
        self.loader, self.net, self.device = loader, net, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in iter_fit_batches(self.loader, self.device, name="fit_loader", drop_unknown=False):
            if y is None:
                with torch.no_grad():
                    y = self.net(x).argmax(dim=1)
            yield {"data": x, "label": y}


def from_openood(postprocessor: Any, net: nn.Module, fit_loader: Iterable | None = None, *,
                 num_classes: int | None = None) -> ScoreDetector:
    """Adapt an OpenOOD-style postprocessor (``postprocess(net, data) -> (pred, conf)`` on an
    image tensor ``data``, ``conf`` higher = more in-distribution) as a black-box detector
    reporting ``-conf`` (higher = more OOD).

    With ``fit_loader`` (batches ``(x, y)`` or ``x`` in [0, 1]), ``postprocessor.setup(net,
    {"train": ..., "val": ...}, {})`` is called first with OpenOOD's dict batches
    ``{"data": x, "label": y}`` (every batch validated; the net in eval mode).  OpenOOD runs
    ``postprocess`` under ``torch.no_grad``, so the detector is black-box
    (``differentiable = False``): ``evaluate`` attacks it with a score-only attack.
    """
    if not callable(getattr(postprocessor, "postprocess", None)):
        raise TypeError(f"`postprocessor` must have postprocess(net, data) -> (pred, conf), got "
                        f"{type(postprocessor).__name__}.")
    if not isinstance(net, nn.Module):
        raise TypeError(f"`net` must be the nn.Module classifier, got {type(net).__name__}.")
    if fit_loader is not None and callable(getattr(postprocessor, "setup", None)):
        dicts = _DictLoader(fit_loader, net, module_device(net))
        with eval_mode(net):
            postprocessor.setup(net, {"train": dicts, "val": dicts}, {})

    def conf(x: torch.Tensor) -> torch.Tensor:
        out = postprocessor.postprocess(net, x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ValueError("`postprocessor.postprocess(net, data)` must return (pred, conf).")
        return torch.as_tensor(out[1], device=x.device).float()

    det = ScoreDetector(conf, model=net, num_classes=num_classes, higher_is_ood=False, differentiable=False)
    det.adapter_mode = "black-box"
    object.__setattr__(det, "source", postprocessor)
    return det


# -- building pytorch-ood detectors on our classifiers (tests, benchmark) -----------------------
def _stages(model: nn.Module) -> list[nn.Module]:
    """Stage modules ``[normalize + stage 1, stage 2, ...]`` of a model with a ``features``
    ``nn.Sequential`` (split after each pooling layer but the last), for MultiMahalanobis / Gram."""
    from ..models import Normalize, unwrap_model

    inner = unwrap_model(model)
    feats = getattr(inner, "features", None)
    if not isinstance(feats, nn.Sequential):
        raise ValueError("MultiMahalanobis and Gram need the model's stages: a `features` nn.Sequential "
                         f"(like SmallCNN or torchvision VGG); {type(inner).__name__} has none.")
    cuts = [i + 1 for i, m in enumerate(feats) if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    bounds = [0] + cuts + [len(feats) - 1]  # leave the final global pooling out: 4-D maps
    stages = [feats[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if isinstance(model, Normalize):
        stages[0] = nn.Sequential(_NormalizeOnly(model), *stages[0])
    return stages


class _NormalizeOnly(nn.Module):
    def __init__(self, norm) -> None:
        super().__init__()
        object.__setattr__(self, "norm", norm)

    def forward(self, x):
        return self.norm.normalize(x)


def pytorch_ood_detector(name: str, model: nn.Module, num_classes: int | None = None, **kwargs: Any):
    """Build pytorch-ood's ``name`` detector on ``model``: logits detectors on ``model``,
    feature detectors on the penultimate features (``encoder``) and the final linear layer
    (``head``, ``w``, ``b``), feature-map detectors on the penultimate features as
    ``(B, D, 1, 1)`` maps (RankFeat on the last spatial feature maps), MultiMahalanobis /
    Gram on the stages.  ``kwargs`` go to the constructor."""
    import pytorch_ood.detector as P

    from ..models import head_spec

    if name not in PYTORCH_OOD_CLASSES:
        raise ValueError(f"`name` must be one of the pytorch-ood 0.4.0 detectors {PYTORCH_OOD_CLASSES}, got {name!r}.")
    k = head_spec(model, num_classes)[0]
    tap = PenultimateTap(model)
    lin = tap.linear

    def encoder(x):
        return tap(x)[1]

    def backbone(x):
        return tap(x)[1][:, :, None, None]

    def head_maps(f):
        return lin(f.flatten(1))

    cls = getattr(P, name)
    logits_classes = {"EnergyBased", "Entropy", "GEN", "KLMatching", "MaxLogit", "MaxSoftmax", "TemperatureScaling",
                      "OpenMax", "ODIN", "GradNorm", "GradUncertainty", "MCD"}
    if name in logits_classes:
        return cls(model, **kwargs)
    if name == "WeightedEBO":
        return cls(model, weights=kwargs.pop("weights", torch.ones(k)), **kwargs)
    if name in ("Mahalanobis", "RMD", "GMM", "KNN", "MahalanobisODIN"):
        return cls(encoder, **kwargs)
    if name == "MCM":
        return cls(encoder, text_embeddings=kwargs.pop("text_embeddings", None), **kwargs)
    if name in ("ViM", "DICE"):
        extra = {"d": max(1, lin.in_features // 2)} if name == "ViM" else {"p": 0.9}
        extra.update(kwargs)
        return cls(encoder, w=lin.weight, b=lin.bias, **extra)
    if name in ("LTS", "NCI", "NNGuide", "PNML", "SHE", "fDBD"):
        return cls(encoder, lin, **kwargs)
    if name in ("ASH", "SCALE", "ReAct", "VRA"):
        return cls(backbone, head_maps, **kwargs)
    if name == "RankFeat":
        stages = _stages(model)
        return cls(nn.Sequential(*stages), lambda f: lin(f.mean(dim=(2, 3))), **kwargs)
    if name == "MultiMahalanobis":
        return cls(_stages(model), **kwargs)
    if name == "Gram":
        return cls(lambda f: lin(f.mean(dim=(2, 3))), _stages(model), num_classes=lin.out_features, **kwargs)
    if name == "NACUE":
        return cls(model, layers=[lin], **kwargs)
    raise AssertionError(name)  # pragma: no cover
