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

* ``score(x) = sum_l a_l M_l(x) + b`` is the OOD logit (``sigmoid(score) = P(OOD)``), the
  paper's logistic detector, whatever the attack objective;
* ``attack_loss(x)`` (``attack_objective``):

  - ``"logit"`` (default): ``-score(x) = -sum_l a_l M_l(x) - b``, a weighted sum of the
    negative minimum class-conditional distances per layer.  Linear in the distances, it
    never saturates, and it is a strictly increasing function of eq. 116, so it has the
    same maximizers and the same accept / reject decisions;
  - ``"logistic"``: ``log(1 + exp(-score(x))) = -log P(OOD)`` (paper eq. 116, and the
    official ATOM code).

Saturation of eq. 116: it is ``softplus(-d)`` with ``d`` the OOD logit; its gradient is
``-sigmoid(-d) grad d``, exactly 0 in float32 once ``exp(-d)`` underflows (``d > ~104``),
e.g. for clean OOD inputs far from the training data (issue #12 measured ``d ~ 600``): a
sign-gradient attack (PGD, APGD) then does not move at all.  With
``attack_objective="logistic"`` the detector warns (:class:`SaturationWarning`) when

* :meth:`fit`: OOD fitting examples reach the saturated range, and
* :meth:`attack_loss` / the attacks' calls of ``_attack_loss``: at least half of the
  **inputs being attacked** have an exactly-zero gradient factor ``exp(-d) == 0`` (checked
  on the first call and then on every 32nd, so the check costs one host sync per 32
  objective evaluations; ``check_saturation=False`` turns it off).

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
from .._utils import eval_mode, module_device, progress
from ._fitting import iter_fit_batches
from .base import Detector, NotFittedError
from .registry import register_detector

__all__ = ["Mahalanobis", "NotFittedError", "SaturationWarning"]


class SaturationWarning(UserWarning):
    """The attack objective has a vanishing (float32-zero) gradient on typical OOD inputs."""


#: OOD logit above which softplus(-d) and its gradient underflow in float32 (e^-88 ~ 1e-38).
_SATURATION = 80.0
#: attacked inputs: warn when at least this fraction has an exactly-zero eq. 116 gradient
_SATURATED_FRACTION = 0.5
#: ... checked on the first objective evaluation and then on every this-many-th
_CHECK_EVERY = 32


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


@register_detector("mahalanobis", head="any",
                   help="layer-wise Mahalanobis distances + logistic regression (Lee et al., NeurIPS 2018); fitted")
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
        attack_objective: ``"logit"`` (``-score``, default: non-saturating, a monotone
            equivalent of eq. 116) or ``"logistic"`` (paper eq. 116; saturates far from the
            data, see the module docstring).
        check_saturation: with ``"logistic"``, warn when the objective's gradient is exactly
            zero on at least half of the inputs being attacked.

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
                 attack_objective: str = "logit", check_saturation: bool = True) -> None:
        super().__init__(model, num_classes)
        tap = FeatureTap(model, layers)
        object.__setattr__(self, "_tap", tap)  # not a submodule: the model is registered once
        self.layers = list(tap.layers)
        self.noise = check_float(noise, "noise", low=0.0)
        self.rcond = check_float(rcond, "rcond", low=0.0)
        self.ridge = check_float(ridge, "ridge", low=0.0)
        self.attack_objective = check_choice(attack_objective, "attack_objective", ("logit", "logistic"))
        self.check_saturation = bool(check_saturation)
        self._objective_calls = 0
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
        d = self._layer_scores(x) @ self.coef + self.intercept  # the OOD logit (= score)
        if self.attack_objective == "logit":
            return -d
        if self.check_saturation:
            self._objective_calls += 1
            if self._objective_calls % _CHECK_EVERY == 1:
                self._warn_if_saturated(d)
        return F.softplus(-d)  # mahalanobis_logistic(M, coef, intercept), eq. 116

    @staticmethod
    def _warn_if_saturated(d: torch.Tensor) -> None:
        """Warn when eq. 116's gradient factor ``exp(-d)`` is exactly 0 (so the input gradient
        is exactly 0) on at least half of the inputs.  One host sync."""
        frac = (torch.exp(-d.detach()) == 0).float().mean().item()
        if frac >= _SATURATED_FRACTION:
            warnings.warn(
                f"Mahalanobis: eq. 116 (attack_objective='logistic') has an exactly zero float32 input gradient "
                f"on {frac:.0%} of the {d.shape[0]} inputs being attacked (OOD logit above ~104), so gradient "
                "attacks cannot move them; attack_objective='logit' is the equivalent non-saturating objective.",
                SaturationWarning, stacklevel=3)

    # -- fitting ---------------------------------------------------------------------------
    @torch.no_grad()
    def _fit_stats(self, loader: Iterable, max_samples: int | None, progress: bool) -> None:
        """Step 1: class means and the tied covariance per layer (float64 sums, batched)."""
        dev, k = module_device(self.model), self.num_classes
        sums: list[torch.Tensor] = []
        outer: list[torch.Tensor] = []
        counts = torch.zeros(k, dtype=torch.float64, device=dev)
        for x, y in iter_fit_batches(loader, dev, name="id_loader", max_samples=max_samples, drop_unknown=False,
                                     show_progress=progress, desc="Mahalanobis: class statistics"):
            logits, feats = self._tap(x)
            if y is None or bool((y < 0).any()):
                y = logits[:, :k].argmax(dim=1)  # unlabeled data: use the classifier's labels
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
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(
                f"`id_loader` has no images of classes {missing[:10]}{'...' if len(missing) > 10 else ''}; "
                "the class means need every class (use more data or a class-balanced loader)."
            )
        for i in range(len(self.layers)):
            self._set_whitening(i, sums[i] / counts[:, None], outer[i], counts)

    def _set_whitening(self, i: int, mu: torch.Tensor, outer: torch.Tensor, counts: torch.Tensor) -> None:
        """Step 1b: ``W W^T = pinv(cov)`` of layer ``i`` from its float64 sums."""
        cov = (outer - (mu.T * counts) @ mu) / counts.sum()  # within-class (tied) covariance
        evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
        top = evals.max().clamp_min(0.0)
        if self.ridge > 0:
            evals = evals + self.ridge * evals.clamp_min(0.0).mean()
        keep = evals > self.rcond * top
        if not bool(keep.any()):
            raise ValueError(f"Layer {self.layers[i]!r} has zero feature variance; choose other `layers`.")
        setattr(self, f"mean_{i}", mu.to(torch.float32))
        setattr(self, f"whiten_{i}", (evecs[:, keep] / evals[keep].sqrt()).to(torch.float32))

    def _collect(self, loader: Iterable, n_max: int, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """At most ``n_max`` validated images (and labels, if every batch has them)."""
        xs, ys = [], []
        for x, y in iter_fit_batches(loader, module_device(self.model), name=name, max_samples=n_max,
                                     drop_unknown=False):
            xs.append(x)
            ys.append(y)
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

    def _regression_data(self, id_loader, ood_loader, lr_id_loader, lr_samples: int, fgsm_eps: float,
                         batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: ID images (label 0) and OOD images (label 1, FGSM negatives by default)."""
        x_in, y_in = self._collect(lr_id_loader if lr_id_loader is not None else id_loader, lr_samples,
                                   "lr_id_loader" if lr_id_loader is not None else "id_loader")
        if ood_loader is not None:
            return x_in, self._collect(ood_loader, lr_samples, "ood_loader")[0]
        return x_in, self._fgsm(x_in, y_in, fgsm_eps, batch_size)

    def _fit_lr(self, a: np.ndarray, b: np.ndarray, seed: int):
        """Logistic regression (OOD = 1) on standardized layer scores (distances can be
        ~1e4, which makes lbfgs crawl)."""
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        feats = np.concatenate([a, b])
        labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
        cv = StratifiedKFold(min(5, len(a), len(b)), shuffle=True, random_state=seed)
        pipe = make_pipeline(StandardScaler(), LogisticRegressionCV(cv=cv, max_iter=2000, **_lr_kwargs()))
        with threadpool_limits(1):  # L features: threads only add overhead
            return pipe.fit(feats, labels)

    def _choose_noise(self, grid, x_in, x_out, batch_size: int, seed: int, progress_bar: bool):
        """Step 3: the ``noise`` with the lowest FPR at 95% TPR on a held-out half."""
        from ..metrics import fpr_at_tpr

        rng, best = np.random.default_rng(seed), None
        for noise in progress(grid, progress_bar and len(grid) > 1, "Mahalanobis: noise"):
            s_in, s_out = self._scores_np(x_in, noise, batch_size), self._scores_np(x_out, noise, batch_size)
            if len(grid) == 1:
                return noise, s_in, s_out
            pi, po = rng.permutation(len(s_in)), rng.permutation(len(s_out))
            hi, ho = len(pi) // 2, len(po) // 2
            lr = self._fit_lr(s_in[pi[:hi]], s_out[po[:ho]], seed)
            fpr = fpr_at_tpr(lr.decision_function(s_in[pi[hi:]]), lr.decision_function(s_out[po[ho:]]))
            if best is None or fpr < best[0]:
                best = (fpr, noise, s_in, s_out)
        return best[1:]

    def _set_regression(self, s_in: np.ndarray, s_out: np.ndarray, seed: int) -> None:
        """Step 4: fit the regression and fold the standardization into ``coef``/``intercept``;
        warn if eq. 116 saturates on the OOD fitting data."""
        self.lr_ = lr = self._fit_lr(s_in, s_out, seed)
        scaler, reg = lr[0], lr[-1]
        coef = reg.coef_[0] / scaler.scale_
        intercept = reg.intercept_[0] - float(np.dot(coef, scaler.mean_))
        dev = module_device(self.model)
        self.coef = torch.as_tensor(coef, dtype=torch.float32, device=dev)
        self.intercept = torch.as_tensor(intercept, dtype=torch.float32, device=dev)
        saturated = int(np.sum(s_out @ coef + intercept > _SATURATION))
        if saturated > 0 and self.attack_objective == "logistic":
            warnings.warn(
                f"Mahalanobis: {saturated} of the {len(s_out)} OOD fitting examples have an OOD logit above "
                f"{_SATURATION:g}, where eq. 116 (attack_objective='logistic') has an exactly zero float32 "
                "gradient, so gradient attacks cannot move them; attack_objective='logit' is the "
                "equivalent non-saturating objective.", SaturationWarning, stacklevel=3)

    def fit(self, id_loader: Iterable, ood_loader: Iterable | None = None, *,
            lr_id_loader: Iterable | None = None, lr_samples: int = 1000, fgsm_eps: float = 0.05,
            noise_grid: Sequence[float] | None = None, max_samples: int | None = None,
            batch_size: int = 128, seed: int = 0, progress: bool = False) -> "Mahalanobis":
        """Fit class means, tied covariances and the logistic regression.

        Args:
            id_loader: in-distribution data, batches ``(x, y)`` or bare ``x`` (images in
                [0, 1]; every batch is checked: range, NaN, one image size).  Labels ``< 0``
                or missing -> the classifier's predictions are used as classes.
            ood_loader: OOD examples for the logistic regression (label 1).  If ``None``,
                FGSM-perturbed ID images (``fgsm_eps``, on the classification loss) play
                that role, as in Lee et al. and the ATOM paper (Appendix B.3).
            lr_id_loader: ID images for the regression (label 0); default ``id_loader``.
            lr_samples: at most this many images per class of the regression (1000).
            fgsm_eps: FGSM step for the default negatives (0.05).
            noise_grid: candidate ``noise`` values (paper: ``{0, 0.01, 0.005, 0.002,
                0.0014, 0.001, 0.0005}``); the one with the lowest FPR at 95% TPR on a
                held-out half of the regression data is kept.  Default: keep ``self.noise``.
            max_samples: use at most this many ``id_loader`` images for the statistics.
            batch_size: batch size for the regression features.
            seed: seed of the regression's cross-validation split.
            progress: show tqdm progress bars.

        Eval mode during fitting (every module's mode restored); the model's parameters get
        no gradients.  Returns ``self``.
        """
        check_int(lr_samples, "lr_samples", low=2)
        check_int(batch_size, "batch_size", low=1)
        check_float(fgsm_eps, "fgsm_eps", low=0.0)
        grid = [self.noise] if noise_grid is None else [check_float(v, "noise_grid", low=0.0) for v in noise_grid]
        if not grid:
            raise ValueError("`noise_grid` is empty; give at least one value (e.g. [0.0]).")
        with eval_mode(self):
            self.fitted = False
            self._fit_stats(id_loader, max_samples, progress)
            x_in, x_out = self._regression_data(id_loader, ood_loader, lr_id_loader, lr_samples, fgsm_eps, batch_size)
            self.noise, s_in, s_out = self._choose_noise(grid, x_in, x_out, batch_size, seed, progress)
            self._set_regression(s_in, s_out, seed)
            self.fitted = True
        return self

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layers={self.layers}, noise={self.noise}, fitted={self.fitted}"
