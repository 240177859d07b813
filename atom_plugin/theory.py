"""The ATOM paper's Section 3 theory, simulated in its Gaussian data model.

This module follows Section 3 and Appendix A.2 of the ATOM paper ("Informative outliers
matter"), equation numbers as in the paper:

* **Gaussian model** (Section 3, Appendix A.2): in-distribution ``P_X = N(mu, sigma^2 I)``;
  test OOD family ``Q = {N(-mu + v, sigma^2 I) : ||v||_2 <= nu}``; detectors
  ``G_theta(x) = sign(theta^T x)``, where ``+1`` means "in-distribution".
  :class:`GaussianModel`, :func:`make_instance`, :func:`sample_in`, :func:`sample_ood`.
* **Parameter setting, equation 15**: ``sigma^2 = sqrt(d / n0)``, ``nu <= ||mu||_2 / 4`` and
  ``d >~ n0 / eps^4 + n0 log^2 d``; ``||mu||_2^2 ~= d`` (the proof of Proposition 3 draws
  ``mu ~ N(0, I)`` and conditions on ``||mu||_2^2 in (9d/10, 11d/10)``).
* **Auxiliary data**: the ideal ``U_X`` (``v`` uniform in the ball of radius ``nu``, then
  ``N(-mu + v, sigma^2 I)``; Appendix A.2.2) and the non-ideal mixture
  ``U_mix = 1/2 N(-mu, sigma^2 I) + 1/2 N(mu0, sigma^2 I)`` with ``mu0 = 10 mu``
  (Section 3, Appendix A.2.3). :func:`sample_aux_ideal`, :func:`sample_aux_mix`.
* **Averaging detector, equation 2** (= equation 33 with ``n = n'`` up to a positive
  factor): ``theta = 1/2 (mean_i x_i - mean_j x'_j)``. With ``U_mix`` its expectation is
  ``1/2 (mu - 9/2 mu) = -7 mu / 4`` (Section 3), pointing away from ``mu``.
  :func:`fit_averaging`.
* **Outlier-mining detector, equations 47-49**: ``theta_int = mean_i x_i`` (47);
  confidence ``f(x) = sigmoid(x^T theta_int / d)`` (48); ``theta_om`` is minus the mean
  of the auxiliary points with ``f(x') in [a, b]`` (49), with ``a = sigmoid(-3/2)``,
  ``b = sigmoid(-1/2)`` from the proof of Proposition 1. :func:`fit_intermediate`,
  :func:`confidence`, :func:`fit_mining`.
* **Errors in closed form, equations 16 and 18-24**:
  ``FNR(G_theta) = Phi(-mu^T theta / (sigma ||theta||_2))`` and, for ``l_inf``
  perturbations of size ``eps`` (the worst ``delta = eps * sign(theta)`` shifts
  ``theta^T x`` by ``eps ||theta||_1``) and the worst ``v = nu theta / ||theta||_2``,
  ``sup_Q FPR = Phi((-mu^T theta + nu ||theta||_2 + eps ||theta||_1) / (sigma ||theta||_2))``.
  :func:`fnr`, :func:`worst_fpr`; Monte-Carlo checks :func:`empirical_fnr`,
  :func:`empirical_worst_fpr`.
* **Proposition 1** (separation): for large ``d`` the mining detector has small FNR and
  worst-case FPR, while the averaging detector tends to ``-7 mu / 4``, "the worst errors
  among all detectors". :func:`simulate` and :func:`sweep` measure both.

Note on the FPR sign: the paper's typeset equation 21 is garbled in our copy; the formula
above is re-derived from equation 18 (``FPR = P[sup_delta theta^T (x + delta) >= 0]`` for
``x ~ N(-mu + v, sigma^2 I)``) and is the one the tests check by Monte Carlo.

All arrays are ``numpy`` float64; samples are rows, shape ``(n, d)``. Randomness comes from a
seeded ``numpy.random.Generator`` (pass a Generator, an int seed or ``None``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.special import expit, ndtr

from ._utils import progress as progress_bar
from ._validation import check_choice, check_float, check_int

__all__ = [
    "GaussianModel", "make_instance", "eq15_satisfied", "default_sample_size",
    "sample_in", "sample_ood", "sample_aux_mix", "sample_aux_ideal",
    "fit_averaging", "fit_intermediate", "confidence", "fit_mining", "MINING_WINDOW",
    "fnr", "worst_fpr", "worst_case_shift", "worst_case_perturbation",
    "empirical_fnr", "empirical_worst_fpr", "cosine", "DETECTORS", "simulate", "sweep", "format_table",
]

#: ``(a, b)`` of Proposition 1's proof: ``a = sigmoid(-3/2)``, ``b = sigmoid(-1/2)``.
MINING_WINDOW: tuple[float, float] = (float(expit(-1.5)), float(expit(-0.5)))

_CHUNK_FLOATS = 1 << 22  # rows per chunk * d: 4M float64 = 32 MB


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True, eq=False)
class GaussianModel:
    """The ``(mu, sigma, nu)``-Gaussian model of Appendix A.2.

    ``mu``: mean vector, shape ``(d,)``, not all zero. ``sigma > 0``: noise std.
    ``nu >= 0``: radius of the OOD shifts ``v`` in ``Q`` (``nu = 0``: ``Q = {N(-mu, sigma^2 I)}``).
    """

    mu: np.ndarray
    sigma: float
    nu: float
    n0: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        mu = np.asarray(self.mu, dtype=np.float64)
        if mu.ndim != 1 or mu.shape[0] < 1:
            raise ValueError(f"`mu` must be a 1-D array of shape (d,) with d >= 1, got shape {mu.shape}.")
        if not np.all(np.isfinite(mu)):
            raise ValueError("`mu` contains NaN or infinite values.")
        if not np.any(mu):
            raise ValueError("`mu` must not be the zero vector (P_X and Q would coincide).")
        mu = mu.copy()
        mu.setflags(write=False)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", check_float(self.sigma, "sigma", low=0.0, low_open=True))
        object.__setattr__(self, "nu", check_float(self.nu, "nu", low=0.0))

    @property
    def d(self) -> int:
        """Dimension ``d``."""
        return int(self.mu.shape[0])

    @property
    def mu_norm(self) -> float:
        """``||mu||_2``."""
        return float(np.linalg.norm(self.mu))


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(check_int(seed, "seed", low=0))


def make_instance(d: int, *, n0: int = 1, mu: str | np.ndarray = "ones", nu: float | None = None,
                  seed: Any = None) -> GaussianModel:
    """An instance of the paper's family (parameter setting, equation 15).

    ``sigma^2 = sqrt(d / n0)``; ``nu = ||mu||_2 / 4`` by default (the largest value equation 15
    allows; pass ``nu`` in ``[0, ||mu||_2 / 4]`` for less). ``mu``:

    * ``"ones"`` (default): ``mu = (1, ..., 1)``, so ``||mu||_2^2 = d`` exactly and
      ``||mu||_1 = sqrt(d) ||mu||_2`` (the hardest ``mu`` for ``l_inf`` perturbations).
    * ``"gaussian"``: ``mu ~ N(0, I_d)`` drawn from ``seed`` (as in Proposition 3's proof;
      ``||mu||_2^2`` is within 10% of ``d`` with high probability for large ``d``).
    * an array of shape ``(d,)``.

    The condition on ``d`` (``d >~ n0 / eps^4 + n0 log^2 d``) depends on ``eps``; see
    :func:`eq15_satisfied`.
    """
    d = check_int(d, "d", low=1)
    n0 = check_int(n0, "n0", low=1)
    if isinstance(mu, str):
        check_choice(mu, "mu", ("ones", "gaussian"))
        mu_vec = np.ones(d) if mu == "ones" else _rng(seed).standard_normal(d)
    else:
        mu_vec = np.asarray(mu, dtype=np.float64)
        if mu_vec.shape != (d,):
            raise ValueError(f"`mu` must have shape (d,) = ({d},), got {mu_vec.shape}.")
    norm = float(np.linalg.norm(mu_vec))
    if nu is None:
        nu = norm / 4.0
    else:
        nu = check_float(nu, "nu", low=0.0)
        if nu > norm / 4.0 * (1 + 1e-12):
            raise ValueError(f"`nu` must be <= ||mu||_2 / 4 = {norm / 4:.6g} (equation 15), got {nu}.")
    return GaussianModel(mu=mu_vec, sigma=(d / n0) ** 0.25, nu=nu, n0=n0)


def eq15_satisfied(d: int, n0: int, eps: float) -> bool:
    """``d >= n0 / eps^4 + n0 log^2 d`` (equation 15 with its hidden constant set to 1)."""
    d = check_int(d, "d", low=1)
    n0 = check_int(n0, "n0", low=1)
    eps = _check_eps(eps)
    if eps == 0.0:
        return d >= n0 * math.log(d) ** 2
    return d >= n0 / eps ** 4 + n0 * math.log(d) ** 2


def default_sample_size(d: int, n0: int = 1) -> int:
    """Default ``n`` and ``n'``: ``max(100, ceil(20 sqrt(d n0)))``.

    Proposition 1 asks for ``n >= c (n0 log d + sqrt(d n0))``; the mined detector's noise per
    coordinate is ``sigma^2 / k`` with ``k ~ n'/2`` selected outliers, which stays below ``1``
    once ``n' >~ sqrt(d / n0)``.
    """
    d = check_int(d, "d", low=1)
    n0 = check_int(n0, "n0", low=1)
    return max(100, math.ceil(20 * math.sqrt(d * n0)))


def _check_eps(eps: Any) -> float:
    eps = check_float(eps, "eps", low=0.0)
    if eps >= 0.5:
        raise ValueError(f"`eps` must be in [0, 1/2) (Proposition 1 takes eps in (0, 1/2)), got {eps}.")
    return eps


def _check_model(model: Any) -> GaussianModel:
    if not isinstance(model, GaussianModel):
        raise TypeError(f"`model` must be a GaussianModel (see make_instance), got {type(model).__name__}.")
    return model


# ----------------------------------------------------------------------------- sampling
def sample_in(model: GaussianModel, n: int, rng: Any = None) -> np.ndarray:
    """``n`` points from ``P_X = N(mu, sigma^2 I)``; shape ``(n, d)``."""
    model = _check_model(model)
    n = check_int(n, "n", low=1)
    return model.mu + model.sigma * _rng(rng).standard_normal((n, model.d))


def sample_ood(model: GaussianModel, n: int, rng: Any = None, v: np.ndarray | None = None) -> np.ndarray:
    """``n`` points from ``Q_v = N(-mu + v, sigma^2 I)`` (``v = 0`` by default); ``(n, d)``.

    ``v`` must satisfy ``||v||_2 <= nu`` so that ``Q_v`` is in the family ``Q``.
    """
    model = _check_model(model)
    n = check_int(n, "n", low=1)
    mean = -model.mu
    if v is not None:
        mean = mean + _check_shift(v, model)
    return mean + model.sigma * _rng(rng).standard_normal((n, model.d))


def _check_shift(v: Any, model: GaussianModel) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (model.d,):
        raise ValueError(f"`v` must have shape (d,) = ({model.d},), got {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("`v` contains NaN or infinite values.")
    norm = float(np.linalg.norm(v))
    if norm > model.nu * (1 + 1e-9) + 1e-12:
        raise ValueError(f"`v` must have ||v||_2 <= nu = {model.nu:.6g} (Q's radius), got {norm:.6g}.")
    return v


def sample_aux_mix(model: GaussianModel, n: int, rng: Any = None, *, mu0_scale: float = 10.0,
                   return_source: bool = False):
    """``n`` auxiliary outliers from ``U_mix = 1/2 N(-mu, sigma^2 I) + 1/2 N(mu0, sigma^2 I)``.

    ``mu0 = mu0_scale * mu`` (the paper: ``mu0 = 10 mu``; Appendix A.2.3 says any
    sufficiently large ``c > 1`` works). Each point independently comes from the informative
    part ``N(-mu, .)`` with probability 1/2. Returns ``x`` ``(n, d)``, and with
    ``return_source=True`` also the boolean ``(n,)`` mask ``I_1`` (True = informative part,
    equation 55).
    """
    model = _check_model(model)
    n = check_int(n, "n", low=1)
    mu0_scale = check_float(mu0_scale, "mu0_scale")
    gen = _rng(rng)
    informative = gen.random(n) < 0.5
    means = np.where(informative[:, None], -model.mu, mu0_scale * model.mu)
    x = means + model.sigma * gen.standard_normal((n, model.d))
    return (x, informative) if return_source else x


def sample_aux_ideal(model: GaussianModel, n: int, rng: Any = None) -> np.ndarray:
    """``n`` auxiliary outliers from the ideal ``U_X`` (Appendix A.2.2): draw ``v`` uniformly
    from the ball ``{||v||_2 <= nu}``, then ``x ~ N(-mu + v, sigma^2 I)``; shape ``(n, d)``."""
    model = _check_model(model)
    n = check_int(n, "n", low=1)
    gen = _rng(rng)
    direction = gen.standard_normal((n, model.d))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-300)
    radius = model.nu * gen.random(n) ** (1.0 / model.d)
    v = direction * radius[:, None]
    return -model.mu + v + model.sigma * gen.standard_normal((n, model.d))


# ----------------------------------------------------------------------------- detectors
def _check_samples(x: Any, name: str, d: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"`{name}` must be a 2-D array of shape (n, d) with n, d >= 1, got shape {x.shape}.")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"`{name}` must have d = {d} columns (as the other data), got {x.shape[1]}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def fit_averaging(x_in: np.ndarray, x_aux: np.ndarray) -> np.ndarray:
    """Averaging detector, equation 2: ``theta = 1/2 (mean(x_in) - mean(x_aux))``; ``(d,)``.

    The factor 1/2 is the paper's (it gives the stated limit ``-7 mu / 4`` under ``U_mix``);
    a positive factor does not change ``sign(theta^T x)`` or any error.
    """
    x_in = _check_samples(x_in, "x_in")
    x_aux = _check_samples(x_aux, "x_aux", x_in.shape[1])
    return 0.5 * (x_in.mean(axis=0) - x_aux.mean(axis=0))


def fit_intermediate(x_in: np.ndarray) -> np.ndarray:
    """Intermediate solution, equation 47: ``theta_int = mean(x_in)``; shape ``(d,)``."""
    return _check_samples(x_in, "x_in").mean(axis=0)


def confidence(x: np.ndarray, theta_int: np.ndarray) -> np.ndarray:
    """In-distribution confidence, equation 48: ``f(x) = sigmoid(x^T theta_int / d)``; ``(n,)``."""
    theta_int = _check_theta(theta_int, "theta_int")
    x = _check_samples(x, "x", theta_int.shape[0])
    return expit(x @ theta_int / theta_int.shape[0])


def _check_window(a: float | None, b: float | None) -> tuple[float, float]:
    a = MINING_WINDOW[0] if a is None else check_float(a, "a", low=0.0, high=1.0)
    b = MINING_WINDOW[1] if b is None else check_float(b, "b", low=0.0, high=1.0)
    if a > b:
        raise ValueError(f"the confidence window needs `a` <= `b`, got a={a} and b={b}.")
    return a, b


def fit_mining(x_in: np.ndarray, x_aux: np.ndarray, *, a: float | None = None, b: float | None = None,
               return_mask: bool = False):
    """Outlier-mining detector, equations 47-49; returns ``theta_om`` of shape ``(d,)``.

    ``theta_int = mean(x_in)`` (47); keep the auxiliary points whose confidence
    ``f(x') = sigmoid(x'^T theta_int / d)`` (48) lies in ``[a, b]`` (default
    ``[sigmoid(-3/2), sigmoid(-1/2)]``, Proposition 1's proof); ``theta_om`` is minus their
    mean (49). With ``return_mask=True`` also returns the boolean ``(n',)`` selection.

    If no auxiliary point falls in the window, equation 49 is 0/0: ``theta_om`` is the zero
    vector (``sign(0)`` accepts nothing and rejects nothing: FNR = FPR = 1 by equations 16
    and 18) and a ``RuntimeWarning`` says so.
    """
    a, b = _check_window(a, b)
    x_in = _check_samples(x_in, "x_in")
    x_aux = _check_samples(x_aux, "x_aux", x_in.shape[1])
    f = confidence(x_aux, fit_intermediate(x_in))
    mask = (f >= a) & (f <= b)
    k = int(mask.sum())
    if k == 0:
        warnings.warn("fit_mining: no auxiliary point has confidence in [a, b]; theta_om is the zero vector.",
                      RuntimeWarning, stacklevel=2)
        theta = np.zeros(x_in.shape[1])
    else:
        theta = -x_aux[mask].mean(axis=0)
    return (theta, mask) if return_mask else theta


# ----------------------------------------------------------------------------- errors
def _check_theta(theta: Any, name: str = "theta", d: int | None = None, allow_stack: bool = False) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    ok_rank = theta.ndim == 1 or (allow_stack and theta.ndim == 2)
    if not ok_rank or theta.shape[-1] < 1:
        shape = "(d,) or (m, d)" if allow_stack else "(d,)"
        raise ValueError(f"`{name}` must have shape {shape}, got {theta.shape}.")
    if d is not None and theta.shape[-1] != d:
        raise ValueError(f"`{name}` must have d = {d} entries (the model's dimension), got {theta.shape[-1]}.")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return theta


def cosine(theta: np.ndarray, mu: np.ndarray) -> float:
    """``cos(theta, mu)``; 0 for the zero vector."""
    theta = _check_theta(theta)
    mu = _check_theta(mu, "mu", theta.shape[0])
    nt = float(np.linalg.norm(theta))
    return 0.0 if nt == 0.0 else float(theta @ mu) / (nt * float(np.linalg.norm(mu)))


def fnr(theta: np.ndarray, model: GaussianModel) -> float:
    """Closed-form FNR, equation 16: ``P_{x~P_X}[theta^T x <= 0] = Phi(-mu^T theta / (sigma ||theta||_2))``.

    ``theta = 0`` gives 1 (``theta^T x = 0 <= 0`` always).
    """
    model = _check_model(model)
    theta = _check_theta(theta, d=model.d)
    norm2 = float(np.linalg.norm(theta))
    if norm2 == 0.0:
        return 1.0
    return float(ndtr(-float(model.mu @ theta) / (model.sigma * norm2)))


def worst_case_shift(theta: np.ndarray, model: GaussianModel) -> np.ndarray:
    """The ``v`` in ``Q``'s ball maximizing the FPR of ``G_theta``: ``nu theta / ||theta||_2``."""
    model = _check_model(model)
    theta = _check_theta(theta, d=model.d)
    norm2 = float(np.linalg.norm(theta))
    return np.zeros(model.d) if norm2 == 0.0 else model.nu * theta / norm2


def worst_case_perturbation(theta: np.ndarray, eps: float) -> np.ndarray:
    """The ``l_inf`` perturbation of size ``eps`` maximizing ``theta^T delta``: ``eps sign(theta)``
    (it adds ``eps ||theta||_1`` to ``theta^T x``; equation 19)."""
    theta = _check_theta(theta)
    return _check_eps(eps) * np.sign(theta)


def worst_fpr(theta: np.ndarray, model: GaussianModel, eps: float, v: np.ndarray | None = None) -> float:
    """Closed-form robust FPR under ``l_inf`` perturbations of size ``eps`` (equations 18-24).

    ``v=None``: the worst case over the family ``Q`` (equation 24),
    ``Phi((-mu^T theta + nu ||theta||_2 + eps ||theta||_1) / (sigma ||theta||_2))``.
    With ``v`` given (``||v||_2 <= nu``): the FPR on that ``Q_v`` (equation 21), ``nu ||theta||_2``
    replaced by ``v^T theta``. ``theta = 0`` gives 1.
    """
    model = _check_model(model)
    theta = _check_theta(theta, d=model.d)
    eps = _check_eps(eps)
    norm2 = float(np.linalg.norm(theta))
    if norm2 == 0.0:
        return 1.0
    shift = model.nu * norm2 if v is None else float(_check_shift(v, model) @ theta)
    z = (-float(model.mu @ theta) + shift + eps * float(np.abs(theta).sum())) / (model.sigma * norm2)
    return float(ndtr(z))


def _noise_chunks(d: int, n: int, gen: np.random.Generator, chunk_size: int | None):
    rows = chunk_size or max(1, _CHUNK_FLOATS // d)
    done = 0
    while done < n:
        m = min(rows, n - done)
        yield gen.standard_normal((m, d))
        done += m


def empirical_fnr(theta: np.ndarray, model: GaussianModel, n: int, rng: Any = None, *,
                  chunk_size: int | None = None):
    """Monte-Carlo FNR: fraction of ``n`` fresh ``x ~ P_X`` with ``theta^T x <= 0``.

    ``theta`` may be ``(d,)`` (returns a float) or a stack ``(m, d)`` (returns ``(m,)``, all
    detectors scored on the same samples). Samples are drawn in chunks of ``chunk_size`` rows.
    """
    model = _check_model(model)
    theta = _check_theta(theta, d=model.d, allow_stack=True)
    n = check_int(n, "n", low=1)
    th = np.atleast_2d(theta)
    gen = _rng(rng)
    errors = np.zeros(th.shape[0])
    for z in _noise_chunks(model.d, n, gen, chunk_size):
        x = model.mu + model.sigma * z
        errors += ((x @ th.T) <= 0).sum(axis=0)
    out = errors / n
    return float(out[0]) if theta.ndim == 1 else out


def empirical_worst_fpr(theta: np.ndarray, model: GaussianModel, eps: float, n: int, rng: Any = None, *,
                        v: np.ndarray | None = None, chunk_size: int | None = None):
    """Monte-Carlo robust FPR: draw ``x ~ Q_v`` (``v`` = :func:`worst_case_shift` of each
    ``theta`` unless given), attack it with ``delta = eps sign(theta)`` and count
    ``theta^T (x + delta) >= 0`` (equation 1's ``max_delta I[G(x + delta) = 1]``).

    ``theta`` ``(d,)`` -> float; ``(m, d)`` -> ``(m,)`` (common noise draws).
    """
    model = _check_model(model)
    theta = _check_theta(theta, d=model.d, allow_stack=True)
    eps = _check_eps(eps)
    n = check_int(n, "n", low=1)
    th = np.atleast_2d(theta)
    if v is not None:
        shifts = np.broadcast_to(_check_shift(v, model), th.shape)
    else:
        shifts = np.stack([worst_case_shift(t, model) for t in th])
    deltas = np.stack([worst_case_perturbation(t, eps) for t in th])
    # theta_k^T (x + delta_k) with x = -mu + v_k + sigma z, computed with the full x per detector
    gen = _rng(rng)
    hits = np.zeros(th.shape[0])
    for z in _noise_chunks(model.d, n, gen, chunk_size):
        for k in range(th.shape[0]):
            x_adv = (-model.mu + shifts[k] + deltas[k]) + model.sigma * z
            hits[k] += np.count_nonzero(x_adv @ th[k] >= 0)
    out = hits / n
    return float(out[0]) if theta.ndim == 1 else out


# ----------------------------------------------------------------------------- experiment
DETECTORS = ("averaging", "mining", "oracle", "averaging_ideal")


def simulate(d: int, *, n0: int = 1, eps: float = 0.25, n: int | None = None, n_aux: int | None = None,
             mu: str = "ones", nu: float | None = None, mu0_scale: float = 10.0, a: float | None = None,
             b: float | None = None, n_eval: int = 0, ideal: bool = False, seed: int = 0,
             chunk_size: int | None = None, return_thetas: bool = False):
    """One run of Section 3's experiment in dimension ``d``; returns one row (dict) per detector.

    Draws ``n`` in-distribution points from ``P_X`` and ``n_aux`` outliers from ``U_mix``
    (defaults: :func:`default_sample_size`), in chunks of ``chunk_size`` rows to bound memory
    (the detectors only need sums, ``theta_int`` and each outlier's confidence, so the result
    equals :func:`fit_averaging` / :func:`fit_mining` on the concatenated chunks). Rows:

    * ``averaging``: equation 2 on ``P_X`` and ``U_mix`` data (Section 3: fails);
    * ``mining``: equations 47-49 on the same data (Proposition 1: succeeds);
    * ``oracle``: ``theta = mu`` (Appendix A.2.1), for reference;
    * ``averaging_ideal`` (only with ``ideal=True``): equation 2 with ``n_aux`` outliers from
      the ideal ``U_X`` instead (Proposition 4: succeeds when all outliers are informative).

    ``n_eval > 0`` adds Monte-Carlo estimates of both errors from ``n_eval`` fresh samples.
    Randomness: ``SeedSequence(seed)`` spawns independent streams for ``mu``, the
    in-distribution data, ``U_mix``, ``U_X`` and the evaluation, so switching ``ideal`` or
    ``n_eval`` does not change the other detectors.

    Each row: ``d, detector, cos_mu, fnr, worst_fpr`` (closed form, equations 16 and 24),
    ``fnr_emp``, ``worst_fpr_emp`` (``None`` if ``n_eval == 0``), ``n_selected`` and
    ``selected_informative`` (fraction of mined outliers from ``N(-mu, .)``; mining row only),
    and the instance parameters. ``return_thetas=True`` returns ``(rows, {detector: theta})``.
    """
    d = check_int(d, "d", low=1)
    n0 = check_int(n0, "n0", low=1)
    eps = _check_eps(eps)
    n = default_sample_size(d, n0) if n is None else check_int(n, "n", low=1)
    n_aux = default_sample_size(d, n0) if n_aux is None else check_int(n_aux, "n_aux", low=1)
    n_eval = check_int(n_eval, "n_eval", low=0)
    seed = check_int(seed, "seed", low=0)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", low=1)
    a, b = _check_window(a, b)
    g_mu, g_in, g_aux, g_ideal, g_eval = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    model = make_instance(d, n0=n0, mu=mu, nu=nu, seed=g_mu)
    rows = chunk_size or max(1, _CHUNK_FLOATS // d)

    # in-distribution: sum -> theta_int (equation 47)
    sum_in = np.zeros(d)
    for start in range(0, n, rows):
        sum_in += sample_in(model, min(rows, n - start), g_in).sum(axis=0)
    theta_int = sum_in / n
    sum_aux, sum_sel, k, k_inf = _aux_sums(model, n_aux, rows, g_aux, theta_int, a, b, mu0_scale)
    thetas = {"averaging": 0.5 * (theta_int - sum_aux / n_aux)}
    if k == 0:
        warnings.warn(f"simulate(d={d}): no auxiliary point has confidence in [a, b]; theta_om = 0.",
                      RuntimeWarning, stacklevel=2)
    thetas["mining"] = sum_sel / k if k else np.zeros(d)
    thetas["oracle"] = model.mu.copy()
    if ideal:
        sum_ideal = np.zeros(d)
        for start in range(0, n_aux, rows):
            sum_ideal += sample_aux_ideal(model, min(rows, n_aux - start), g_ideal).sum(axis=0)
        thetas["averaging_ideal"] = 0.5 * (theta_int - sum_ideal / n_aux)

    names = list(thetas)
    stack = np.stack([thetas[name] for name in names])
    if n_eval:
        fnr_emp = empirical_fnr(stack, model, n_eval, g_eval, chunk_size=chunk_size)
        fpr_emp = empirical_worst_fpr(stack, model, eps, n_eval, g_eval, chunk_size=chunk_size)
    out = []
    for i, name in enumerate(names):
        out.append({
            "d": d, "detector": name, "n0": n0, "eps": eps, "sigma": model.sigma, "nu": model.nu,
            "mu_norm": model.mu_norm, "n": n, "n_aux": n_aux, "seed": seed, "eq15": eq15_satisfied(d, n0, eps),
            "cos_mu": cosine(stack[i], model.mu), "fnr": fnr(stack[i], model),
            "worst_fpr": worst_fpr(stack[i], model, eps),
            "fnr_emp": float(fnr_emp[i]) if n_eval else None,
            "worst_fpr_emp": float(fpr_emp[i]) if n_eval else None,
            "n_selected": k if name == "mining" else None,
            "selected_informative": (k_inf / k if k else None) if name == "mining" else None,
        })
    return (out, thetas) if return_thetas else out


def _aux_sums(model, n_aux: int, rows: int, g_aux, theta_int: np.ndarray, a: float, b: float,
              mu0_scale: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Over ``n_aux`` draws of ``U_mix`` in chunks: the plain sum (equation 2), minus the sum of
    the mined points (confidence in ``[a, b]``, equations 48-49), their count and how many of
    them are informative."""
    sum_aux = np.zeros(model.mu.shape[0])
    sum_sel = np.zeros(model.mu.shape[0])
    k = k_inf = 0
    for start in range(0, n_aux, rows):
        x, informative = sample_aux_mix(model, min(rows, n_aux - start), g_aux, mu0_scale=mu0_scale,
                                        return_source=True)
        sum_aux += x.sum(axis=0)
        f = confidence(x, theta_int)
        mask = (f >= a) & (f <= b)
        sum_sel -= x[mask].sum(axis=0)
        k += int(mask.sum())
        k_inf += int((mask & informative).sum())
    return sum_aux, sum_sel, k, k_inf


def sweep(dims: Sequence[int], *, progress: bool = False, **kwargs) -> list[dict]:
    """:func:`simulate` for each ``d`` in ``dims`` (same keyword arguments); rows concatenated."""
    dims = list(dims)
    if not dims:
        raise ValueError("`dims` must list at least one dimension d >= 1.")
    rows: list[dict] = []
    for d in progress_bar(dims, progress, "dimensions", leave=True):
        rows.extend(simulate(d, **kwargs))
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of :func:`simulate` rows."""
    def num(x, fmt="{:.3g}"):
        return "-" if x is None else fmt.format(x)

    head = (f"{'d':>6} {'sigma':>6} {'n=n_aux':>8} {'eq15':>5} {'detector':>15} {'cos(th,mu)':>10} "
            f"{'FNR':>9} {'FNR_mc':>7} {'wFPR':>9} {'wFPR_mc':>7} {'mined':>6} {'inf.frac':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        nn = f"{r['n']}" if r["n"] == r["n_aux"] else f"{r['n']}/{r['n_aux']}"
        lines.append(
            f"{r['d']:>6} {r['sigma']:>6.2f} {nn:>8} {str(r['eq15'])[0]:>5} {r['detector']:>15} "
            f"{r['cos_mu']:>10.3f} {num(r['fnr'], '{:.2e}'):>9} {num(r['fnr_emp'], '{:.4f}'):>7} "
            f"{num(r['worst_fpr'], '{:.2e}'):>9} {num(r['worst_fpr_emp'], '{:.4f}'):>7} "
            f"{num(r['n_selected'], '{:d}'):>6} {num(r['selected_informative'], '{:.3f}'):>8}")
    return "\n".join(lines)
