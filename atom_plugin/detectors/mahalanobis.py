"""Mahalanobis detector (Lee et al., 2018) with a logistic-regression layer ensemble.

Per feature layer ``l`` (spatially mean-pooled features ``h_l(x)``, shape ``(B, D_l)``):
class means ``mu_{l,c}`` and one tied covariance ``S_l`` from in-distribution data; the
confidence ``M_l(x) = -min_c (h_l - mu_{l,c})^T S_l^+ (h_l - mu_{l,c})`` (squared
Mahalanobis distance to the closest class; higher = more in-distribution).  With
``noise > 0`` each layer's score is taken at Lee et al.'s preprocessed input
``x~_l = clamp(x - noise * sign(grad_x min_c d_{l,c}(x)), 0, 1)``.  A logistic regression
(``sklearn.linear_model.LogisticRegressionCV``, on standardized inputs; the scaling is
folded back into the weights) on ``(M_1, ..., M_L)`` is trained with
**OOD as the positive class** (label 1, as in Lee et al.'s code), so

* ``score(x) = sum_l a_l M_l(x) + b`` is the OOD logit (``sigmoid(score) = P(OOD)``);
* ``attack_loss(x) = log(1 + exp(-score(x))) = -log P(OOD)`` (paper eq. 116).

Saturation: eq. 116 is ``softplus(-d)`` with ``d`` the OOD logit; its gradient is
``-sigmoid(-d) grad d``, which underflows to exactly 0 in float32 once ``d > ~88``
(``P(OOD) > 1 - 1e-38``), e.g. for inputs far from the training data.  A sign-gradient
attack (PGD, APGD) then does not move at all.  ``attack_objective="logit"`` uses ``-d``
instead: a strictly increasing function of eq. 116, so the same maximizers, the same
sign gradients wherever eq. 116's gradient is representable and the same accept / reject
comparisons, but no underflow.  The default stays the paper's eq. 116; :meth:`fit` warns
(:class:`SaturationWarning`) when OOD logits of its fitting data reach the saturated range.

Everything is differentiable in ``x``: the min over classes passes the gradient to the
closest class, and the preprocessing direction ``sign(...)`` is piecewise constant (zero
derivative a.e.), so the exact gradient holds it fixed (as in :mod:`.odin`).

Numerics: the covariance is accumulated and inverted in float64 (``torch.linalg.eigh``,
pseudo-inverse dropping eigenvalues below ``rcond * max``, optional ridge); the detector
stores a float32 whitening matrix ``W_l`` with ``W_l W_l^T = S_l^+`` so the distance is
``|h W - mu W|^2``, computed for all classes at once as ``|g|^2 - 2 g m^T + |m|^2``
(a ``(B, K)`` matrix, never ``(B, B)``).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validation import check_choice, check_float, check_images, check_int
from ..features import FeatureTap
from ..objectives import mahalanobis_logistic
from .base import Detector, NotFittedError
from .registry import register_detector

__all__ = ["Mahalanobis", "NotFittedError", "SaturationWarning"]


class SaturationWarning(UserWarning):
    """The attack objective has a vanishing (float32-zero) gradient on typical OOD inputs."""


#: OOD logit above which softplus(-d) and its gradient underflow in float32 (e^-88 ~ 1e-38).
_SATURATION = 80.0


def _pool(f: torch.Tensor) -> torch.Tensor:
    """Features ``(B, C, H, W)`` -> spatial mean ``(B, C)``; tokens ``(B, N, C)`` -> mean over
    tokens; ``(B, D)`` unchanged."""
    if f.dim() == 4:
        return f.mean(dim=(2, 3))
    if f.dim() == 3:
        return f.mean(dim=1)
    if f.dim() == 2:
        return f
    return f.flatten(1)


def _split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)):
        x = batch[0]
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return x, y
    return batch, None


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


def _lr_kwargs() -> dict:
    """Pin scikit-learn defaults that change across versions (L2 penalty, log-loss CV
    scoring, the new fitted attributes) so the fit is the same and silent everywhere."""
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    params = inspect.signature(LogisticRegressionCV).parameters
    kw: dict = {"scoring": "neg_log_loss"}
    if "l1_ratios" in params and params["l1_ratios"].default == "warn":
        kw["l1_ratios"] = (0.0,)
    if "use_legacy_attributes" in params:
        kw["use_legacy_attributes"] = False
    return kw


@register_detector("mahalanobis", head="any")
class Mahalanobis(Detector):
    """Mahalanobis-distance detector; call :meth:`fit` before scoring.

    Args:
        model: classifier taking images in [0, 1].
        layers: module names (``model.named_modules()``) whose outputs are used; default
            :func:`atom_plugin.features.default_feature_layers` (the stage outputs).
        noise: Lee et al.'s preprocessing magnitude ``>= 0`` in pixel units; 0 disables it
            (:meth:`fit` can choose it from ``noise_grid``).
        num_classes: ``K`` (default from :func:`atom_plugin.models.head_spec`).
        rcond: eigenvalues of a covariance below ``rcond * max eigenvalue`` are dropped
            (pseudo-inverse of a singular covariance).
        ridge: added to the covariance as ``ridge * mean eigenvalue * I`` before inversion.
        attack_objective: ``"logistic"`` (paper eq. 116, default) or ``"logit"`` (``-score``,
            its non-saturating monotone equivalent; see the module docstring).

    After :meth:`fit`: ``coef`` ``(L,)``, ``intercept`` ``()``, per-layer buffers
    ``mean_l`` ``(K, D_l)`` and ``whiten_l`` ``(D_l, r_l)``; ``lr_`` is the fitted
    scikit-learn pipeline (``StandardScaler`` then ``LogisticRegressionCV``) on raw ``M``;
    ``score(x) == lr_.decision_function(layer_scores(x))``.  The buffers and ``noise`` (as
    extra state) are in ``state_dict()`` (``lr_`` is not), so a fitted detector can be saved
    and loaded into a fresh ``Mahalanobis(model, layers)``; loading restores ``noise``.
    """

    requires_fit = True

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, noise: float = 0.0,
                 num_classes: int | None = None, rcond: float = 1e-6, ridge: float = 0.0,
                 attack_objective: str = "logistic") -> None:
        super().__init__(model, num_classes)
        tap = FeatureTap(model, layers)
        object.__setattr__(self, "_tap", tap)  # not a submodule: the model is registered once
        self.layers = list(tap.layers)
        self.noise = check_float(noise, "noise", low=0.0)
        self.rcond = check_float(rcond, "rcond", low=0.0)
        self.ridge = check_float(ridge, "ridge", low=0.0)
        self.attack_objective = check_choice(attack_objective, "attack_objective", ("logistic", "logit"))
        for i in range(len(self.layers)):
            self.register_buffer(f"mean_{i}", torch.empty(0))
            self.register_buffer(f"whiten_{i}", torch.empty(0))
        self.register_buffer("coef", torch.empty(0))
        self.register_buffer("intercept", torch.empty(0))
        self.lr_ = None

    # -- state ---------------------------------------------------------------------------
    def _fit_buffers(self) -> list[str]:
        return [f"{k}_{i}" for i in range(len(self.layers)) for k in ("mean", "whiten")] + ["coef", "intercept"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._fit_buffers():
            key = prefix + name
            if key in state_dict:  # buffers are empty until fit: take the incoming shapes
                cur = getattr(self, name)
                setattr(self, name, torch.empty(state_dict[key].shape, dtype=cur.dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.fitted = self.coef.numel() == len(self.layers) and self.intercept.numel() == 1

    def get_extra_state(self) -> dict:
        return {"noise": self.noise, "layers": list(self.layers)}

    def set_extra_state(self, state: dict) -> None:
        if list(state.get("layers", self.layers)) != self.layers:
            raise ValueError(
                f"The state_dict was fitted on layers {state['layers']}, but this detector taps {self.layers}; "
                "construct it with the same `layers`."
            )
        self.noise = check_float(state.get("noise", self.noise), "noise", low=0.0)

    def _require_fit(self, stage: str = "score") -> None:
        if self.fitted:
            return
        has_stats = getattr(self, "mean_0").numel() > 0
        if stage == "stats" and has_stats:
            return
        raise NotFittedError(
            "This Mahalanobis detector is not fitted: call detector.fit(id_loader) (class means, "
            "covariances and the logistic regression) before score / attack_loss, or load a fitted "
            "state_dict."
        )

    def precision(self, layer: int) -> torch.Tensor:
        """The (pseudo-)inverse tied covariance of layer ``layer``, ``(D, D)``, float32."""
        self._require_fit("stats")
        w = getattr(self, f"whiten_{layer}")
        return w @ w.T

    # -- distances and layer scores -------------------------------------------------------
    def _min_dist(self, i: int, feat: torch.Tensor) -> torch.Tensor:
        """``min_c`` squared Mahalanobis distance ``(B,)`` of pooled features ``(B, D)``."""
        w = getattr(self, f"whiten_{i}")
        m = getattr(self, f"mean_{i}") @ w  # (K, r)
        g = feat.to(w.dtype) @ w  # (B, r)
        d = (g * g).sum(1, keepdim=True) - 2.0 * (g @ m.T) + (m * m).sum(1)[None, :]  # (B, K)
        return d.amin(dim=1)

    def _dists_at(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, feats = self._tap(x)
        return [self._min_dist(i, _pool(f)) for i, f in enumerate(feats)]

    def _layer_scores(self, x: torch.Tensor, noise: float | None = None) -> torch.Tensor:
        noise = self.noise if noise is None else noise
        if noise == 0.0:
            return -torch.stack(self._dists_at(x), dim=1)
        with torch.inference_mode(False), torch.enable_grad():  # also under no_grad / inference_mode
            xg = x.detach().clone().requires_grad_(True)
            dists = self._dists_at(xg)
            grads = [torch.autograd.grad(d.sum(), xg, retain_graph=i + 1 < len(dists))[0]
                     for i, d in enumerate(dists)]
        cols = []
        for i, g in enumerate(grads):
            # Lee et al.: step against the gradient of the distance (sign(0) -> +1 as in their code)
            step = torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g))
            xt = (x - noise * step).clamp(0.0, 1.0)
            _, feats = self._tap(xt)
            cols.append(-self._min_dist(i, _pool(feats[i])))
        return torch.stack(cols, dim=1)

    def layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-layer confidences ``M_l(x)`` ``(B, L)`` (higher = more in-distribution)."""
        check_images(x, "x")
        self._require_fit("stats")
        return self._layer_scores(x)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        self._require_fit()
        return self._layer_scores(x) @ self.coef + self.intercept

    def _attack_loss(self, x: torch.Tensor) -> torch.Tensor:
        self._require_fit()
        if self.attack_objective == "logit":
            return -(self._layer_scores(x) @ self.coef + self.intercept)
        return mahalanobis_logistic(self._layer_scores(x), self.coef, self.intercept)

    # -- fitting ---------------------------------------------------------------------------
    @torch.no_grad()
    def _fit_stats(self, loader: Iterable, max_samples: int | None, progress: bool) -> None:
        dev = _device(self.model)
        k = self.num_classes
        sums: list[torch.Tensor] = []
        outer: list[torch.Tensor] = []
        counts = torch.zeros(k, dtype=torch.float64, device=dev)
        n = 0
        for batch in _progress(loader, progress, "Mahalanobis: class statistics"):
            x, y = _split(batch)
            if n == 0:
                check_images(x, "id_loader images")
            x = x.to(dev)
            if max_samples is not None:
                x = x[: max_samples - n]
                y = y[: max_samples - n] if y is not None else None
            logits, feats = self._tap(x)
            if y is None or bool((y < 0).any()):
                y = logits[:, :k].argmax(dim=1)  # unlabeled data: use the classifier's labels
            y = y.to(dev).long()
            if bool((y >= k).any()):
                raise ValueError(f"`id_loader` labels must be in [0, {k}), got max {int(y.max())}.")
            onehot = F.one_hot(y, k).to(torch.float64)  # (B, K)
            counts += onehot.sum(0)
            for i, f in enumerate(feats):
                h = _pool(f).to(torch.float64)
                if len(sums) <= i:
                    sums.append(torch.zeros(k, h.shape[1], dtype=torch.float64, device=dev))
                    outer.append(torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64, device=dev))
                sums[i] += onehot.T @ h
                outer[i] += h.T @ h
            n += x.shape[0]
            if max_samples is not None and n >= max_samples:
                break
        if n == 0:
            raise ValueError("`id_loader` yielded no images.")
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(
                f"`id_loader` has no images of classes {missing[:10]}{'...' if len(missing) > 10 else ''}; "
                "the class means need every class (use more data or a class-balanced loader)."
            )
        for i in range(len(self.layers)):
            mu = sums[i] / counts[:, None]  # (K, D)
            cov = (outer[i] - (mu.T * counts) @ mu) / n  # within-class (tied) covariance
            cov = 0.5 * (cov + cov.T)
            evals, evecs = torch.linalg.eigh(cov)
            top = evals.max().clamp_min(0.0)
            if self.ridge > 0:
                evals = evals + self.ridge * evals.clamp_min(0.0).mean()
            keep = evals > self.rcond * top
            if not bool(keep.any()):
                raise ValueError(f"Layer {self.layers[i]!r} has zero feature variance; choose other `layers`.")
            w = evecs[:, keep] / evals[keep].sqrt()  # W W^T = pinv(cov)
            setattr(self, f"mean_{i}", mu.to(torch.float32))
            setattr(self, f"whiten_{i}", w.to(torch.float32))

    def _collect(self, loader: Iterable, n_max: int, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        xs, ys, n = [], [], 0
        for batch in loader:
            x, y = _split(batch)
            if n == 0:
                check_images(x, name)
            xs.append(x[: n_max - n])
            ys.append(y[: n_max - n] if y is not None else None)
            n += xs[-1].shape[0]
            if n >= n_max:
                break
        if n == 0:
            raise ValueError(f"`{name}` yielded no images.")
        y = None if any(v is None for v in ys) else torch.cat(ys)
        return torch.cat(xs), y

    def _fgsm(self, x: torch.Tensor, y: torch.Tensor | None, eps: float, batch_size: int) -> torch.Tensor:
        """FGSM on the classification loss (Lee et al.'s "adversarial" negatives)."""
        out = []
        for s in range(0, x.shape[0], batch_size):
            xb = x[s: s + batch_size].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(xb)[:, : self.num_classes]
                yb = y[s: s + batch_size] if y is not None else None
                if yb is None or bool((yb < 0).any()):
                    yb = logits.argmax(1)
                (g,) = torch.autograd.grad(F.cross_entropy(logits, yb.to(logits.device).long()), xb)
            out.append((xb + eps * g.sign()).clamp(0.0, 1.0).detach())
        return torch.cat(out)

    def _scores_np(self, x: torch.Tensor, noise: float, batch_size: int) -> np.ndarray:
        out = []
        for s in range(0, x.shape[0], batch_size):
            with torch.no_grad():
                out.append(self._layer_scores(x[s: s + batch_size], noise).detach().cpu().double())
        return torch.cat(out).numpy()

    def fit(self, id_loader: Iterable, ood_loader: Iterable | None = None, *,
            lr_id_loader: Iterable | None = None, lr_samples: int = 1000, fgsm_eps: float = 0.05,
            noise_grid: Sequence[float] | None = None, max_samples: int | None = None,
            batch_size: int = 128, seed: int = 0, progress: bool = False) -> "Mahalanobis":
        """Fit class means, tied covariances and the logistic regression.

        Args:
            id_loader: in-distribution data, batches ``(x, y)`` or bare ``x`` (images in
                [0, 1]).  Labels ``< 0`` or missing -> the classifier's predictions are
                used as classes.  Typically the training set.
            ood_loader: OOD examples for the logistic regression (label 1).  If ``None``,
                FGSM-perturbed ID images (``fgsm_eps``, on the classification loss) play
                that role, as in Lee et al. and the ATOM paper (Appendix B.3).
            lr_id_loader: ID images for the logistic regression (label 0); default
                ``id_loader`` (the paper uses 1000 ID test images).
            lr_samples: at most this many images per class of the regression (1000).
            fgsm_eps: FGSM step for the default negatives (0.05).
            noise_grid: candidate ``noise`` values (paper: ``{0, 0.01, 0.005, 0.002,
                0.0014, 0.001, 0.0005}``); the one with the lowest FPR at 95% TPR on a
                held-out half of the regression data is kept in ``self.noise``.
                Default: keep ``self.noise``.
            max_samples: use at most this many ``id_loader`` images for the statistics.
            batch_size: batch size for the regression features.
            seed: seed of the regression's cross-validation split.
            progress: show tqdm progress bars.

        The model is put in eval mode during fitting and every module's mode is restored
        afterwards.  Model parameters get no gradients (only ``torch.autograd.grad`` w.r.t.
        the images is used).
        Returns ``self``.
        """
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        check_int(lr_samples, "lr_samples", low=2)
        check_int(batch_size, "batch_size", low=1)
        check_float(fgsm_eps, "fgsm_eps", low=0.0)
        if max_samples is not None:
            check_int(max_samples, "max_samples", low=1)
        grid = [self.noise] if noise_grid is None else [check_float(v, "noise_grid", low=0.0) for v in noise_grid]
        if not grid:
            raise ValueError("`noise_grid` is empty; give at least one value (e.g. [0.0]).")
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            self.fitted = False
            self._fit_stats(id_loader, max_samples, progress)
            dev = _device(self.model)
            x_in, y_in = self._collect(lr_id_loader if lr_id_loader is not None else id_loader,
                                       lr_samples, "lr_id_loader" if lr_id_loader is not None else "id_loader")
            x_in = x_in.to(dev)
            if ood_loader is not None:
                x_out = self._collect(ood_loader, lr_samples, "ood_loader")[0].to(dev)
            else:
                x_out = self._fgsm(x_in, y_in, fgsm_eps, batch_size)
            rng = np.random.default_rng(seed)

            def fit_lr(a: np.ndarray, b: np.ndarray):
                feats = np.concatenate([a, b])
                labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])  # OOD = 1
                cv = StratifiedKFold(min(5, len(a), len(b)), shuffle=True, random_state=seed)
                # standardized inputs: distances can be ~1e4, which makes lbfgs crawl
                pipe = make_pipeline(StandardScaler(),
                                     LogisticRegressionCV(cv=cv, max_iter=2000, **_lr_kwargs()))
                with threadpool_limits(1):  # L features: threads only add overhead
                    return pipe.fit(feats, labels)

            best = None
            for noise in _progress(grid, progress and len(grid) > 1, "Mahalanobis: noise"):
                s_in = self._scores_np(x_in, noise, batch_size)
                s_out = self._scores_np(x_out, noise, batch_size)
                if len(grid) == 1:
                    best = (0.0, noise, s_in, s_out)
                    break
                from ..metrics import fpr_at_tpr

                pi, po = rng.permutation(len(s_in)), rng.permutation(len(s_out))
                hi, ho = len(pi) // 2, len(po) // 2
                lr = fit_lr(s_in[pi[:hi]], s_out[po[:ho]])
                fpr = fpr_at_tpr(lr.decision_function(s_in[pi[hi:]]), lr.decision_function(s_out[po[ho:]]))
                if best is None or fpr < best[0]:
                    best = (fpr, noise, s_in, s_out)
            _, self.noise, s_in, s_out = best
            lr = fit_lr(s_in, s_out)
            self.lr_ = lr
            scaler, reg = lr[0], lr[-1]
            coef = reg.coef_[0] / scaler.scale_  # fold the standardization into the weights
            intercept = reg.intercept_[0] - float(np.dot(coef, scaler.mean_))
            self.coef = torch.as_tensor(coef, dtype=torch.float32, device=dev)
            self.intercept = torch.as_tensor(intercept, dtype=torch.float32, device=dev)
            self.fitted = True
            d_out = s_out @ coef + intercept
            saturated = float(np.mean(d_out > _SATURATION))
            if saturated > 0 and self.attack_objective == "logistic":
                warnings.warn(
                    f"Mahalanobis: {saturated:.0%} of the OOD fitting examples have an OOD logit above "
                    f"{_SATURATION:g}, where eq. 116 (attack_objective='logistic') has an exactly zero float32 "
                    "gradient, so gradient attacks cannot move them; attack_objective='logit' is the "
                    "equivalent non-saturating objective.", SaturationWarning, stacklevel=2)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return self

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layers={self.layers}, noise={self.noise}, fitted={self.fitted}"
