"""Torch backend, noise family: gaussian, shot, impulse, speckle noise.

All four add independent per-element noise with the reference's severity parameters; they
match the reference in distribution (the reference draws from NumPy, we draw from a
``torch.Generator``)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .draws import TorchDraws
from .tables import SEVERITY_TABLES, table_params

# the imagenet table's constants (kept for compatibility; see tables.py for all tables)
GAUSSIAN = SEVERITY_TABLES["imagenet"]["gaussian_noise"]
SHOT = SEVERITY_TABLES["imagenet"]["shot_noise"]
IMPULSE = SEVERITY_TABLES["imagenet"]["impulse_noise"]
SPECKLE = SEVERITY_TABLES["imagenet"]["speckle_noise"]


def gaussian_noise(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    c = table_params(table, "gaussian_noise", severity)
    return (x + draws.normal(x.shape, 0.0, c)).clamp_(0, 1)


def _poisson_inversion(lam: torch.Tensor, lam_max: float, draws: TorchDraws) -> torch.Tensor:
    """Exact Poisson samples by inversion of the CDF (vectorized), for rates <= lam_max
    (small): X = #{k : u > CDF(k)}, summed up to k = lam_max + 10 sqrt(lam_max) + 10,
    beyond which the tail mass is below 1e-12.  For devices without ``torch.poisson``
    (MPS)."""
    u = draws.uniform(lam.shape, 0.0, 1.0).to(lam.dtype)
    p = torch.exp(-lam)
    cdf = p.clone()
    out = torch.zeros_like(lam)
    for k in range(1, int(lam_max + 10 * math.sqrt(lam_max) + 10) + 1):
        out += u > cdf
        p *= lam / k
        cdf += p
    return out


def _poisson_clamped_pmf(lam: float, c: float) -> np.ndarray:
    """The distribution of min(X, c) / c for X ~ Poisson(lam) over its ceil(c) + 1 values
    k / c (k = 0 .. ceil(c) - 1) and 1: the pmf of k < c, then P(X >= c) (float64)."""
    n = math.ceil(c)
    if lam == 0.0:
        p = np.zeros(n + 1)
        p[0] = 1.0
        return p
    k = np.arange(n)
    p = np.exp(k * math.log(lam) - lam - np.array([math.lgamma(v + 1.0) for v in k]))
    return np.append(p, max(1.0 - p.sum(), 0.0))


def _alias_table(p: np.ndarray):
    """Walker's alias table of the distribution ``p`` (Vose's construction): draw j
    uniform in [0, K), keep j with probability ``prob[j]``, else take ``alias[j]``."""
    K = p.size
    q = p * (K / p.sum())
    prob, alias = np.ones(K), np.arange(K)
    small = [j for j in range(K) if q[j] < 1.0]
    large = [j for j in range(K) if q[j] >= 1.0]
    while small and large:
        s, l = small.pop(), large.pop()
        prob[s], alias[s] = q[s], l
        q[l] = (q[l] + q[s]) - 1.0
        (small if q[l] < 1.0 else large).append(l)
    return prob, alias  # the leftovers keep probability 1 (rounding residue only)


@lru_cache(maxsize=64)
def _shot_tables(c: float, dtype: torch.dtype, device: str):
    """Alias tables of the clamped shot noise min(Poisson(v c), c) / c for the 256 8-bit
    values v = k / 255 (as ``dtype`` represents them), over K = 2^bits >= ceil(c) + 1
    slots (the outcomes k / c, k < c, then 1, then slots of probability 0): (levels (256,),
    acceptance thresholds (256 K,) in units of 2^-53 (int64), outcome (256 K, 2) =
    (alias value, own value), bits)."""
    levels = torch.arange(256, dtype=dtype) / 255.0
    n = math.ceil(c) + 1
    bits = max(1, (n - 1).bit_length())
    K = 1 << bits
    values = (torch.arange(K, dtype=dtype) / c).clamp_(0, 1)
    probs, aliases = [], []
    for v in levels.double().tolist():
        p = np.zeros(K)
        p[:n] = _poisson_clamped_pmf(float(v) * c, c)
        prob, alias = _alias_table(p)
        probs.append(prob)
        aliases.append(alias)
    threshold = torch.from_numpy(np.round(np.concatenate(probs) * 2.0 ** 53).astype(np.int64))
    outcome = torch.stack([values[torch.from_numpy(np.concatenate(aliases))], values.repeat(256)], 1).reshape(-1)
    return levels.to(device), threshold.to(device), outcome.to(device), bits


#: elements per step of the alias sampler (its temporaries stay in the caches)
SHOT_CHUNK = 65536


def _shot_alias(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    """Exact ``clamp(Poisson(x c) / c, 0, 1)`` for 8-bit inputs: ``x`` equals one of the
    256 values k / 255 elementwise (other elements: ``torch.poisson``).  Each element
    takes one 63-bit random integer: its low ``bits`` pick a slot of Walker's alias table
    of its value's distribution (the Poisson pmf below c and the mass at or above c,
    float64), 53 higher bits decide between the slot and its alias; 5-6x faster than
    ``torch.poisson`` on the CPU."""
    levels, threshold, outcome, bits = _shot_tables(float(c), x.dtype, str(x.device))
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    n = min(flat.numel(), SHOT_CHUNK)
    # buffers reused by every chunk (fresh allocations cost more than the arithmetic)
    fb = torch.empty(n, dtype=x.dtype, device=x.device)
    rb, ib, jb, pb = (torch.empty(n, dtype=torch.long, device=x.device) for _ in range(4))
    kb = torch.empty(n, dtype=torch.bool, device=x.device)
    for s in range(0, flat.numel(), SHOT_CHUNK):
        xs = flat[s:s + SHOT_CHUNK]
        m = xs.numel()
        f, r, i, j, p, keep = fb[:m], rb[:m], ib[:m], jb[:m], pb[:m], kb[:m]
        i.copy_(torch.mul(xs, 255.0, out=f).round_().clamp_(0, 255))    # the 8-bit value
        r.random_(generator=g)                                            # uniform in [0, 2^63)
        torch.bitwise_and(r, (1 << bits) - 1, out=j)                      # the slot
        i.mul_(1 << bits).add_(j)
        torch.lt(r.bitwise_right_shift_(10), torch.index_select(threshold, 0, i, out=p), out=keep)
        o = out[s:s + SHOT_CHUNK]
        torch.index_select(outcome, 0, i.mul_(2).add_(keep), out=o)      # alias value, or the slot's own if kept
        i.copy_(f)
        off = torch.ne(torch.index_select(levels, 0, i, out=f), xs, out=keep)
        if bool(off.any()):  # not an 8-bit value: sample it directly
            o[off] = (torch.poisson(xs[off] * c, generator=g) / c).clamp_(0, 1)
    return out.view_as(x)


def shot_noise(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    c = table_params(table, "shot_noise", severity)
    if getattr(draws, "dtype", torch.float32) == torch.float64:
        # replayed NumPy draws: NumPy's Poisson sampler consumes a rate-dependent number of
        # uniforms, so the rates must be the reference's float64 (uint8 / 255) * c exactly
        rate = torch.round(x.double() * 255.0) / 255.0 * c
        return (draws.poisson(rate) / c).clamp_(0, 1).to(x.dtype)
    if x.device.type == "cpu" and isinstance(getattr(draws, "g", None), torch.Generator) and c < 1024:
        return _shot_alias(x, c, draws.g)  # (slots must fit in the 10 bits below the 53)
    # elsewhere torch.poisson (CUDA) or the inversion sampler (MPS has no torch.poisson)
    counts = _poisson_inversion(x * c, c, draws) if x.device.type == "mps" else draws.poisson(x * c)
    return (counts / c).clamp_(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    """Salt and pepper (skimage ``random_noise(mode="s&p")``): each element is replaced
    with probability ``amount``, by 1 or 0 with equal odds."""
    amount = table_params(table, "impulse_noise", severity)
    u = draws.uniform(x.shape, 0.0, 1.0)
    # one uniform per element: replaced iff u < amount; given that, u / amount is uniform,
    # so "salt iff u < amount / 2" is a fair coin independent of the position
    return torch.where(u < amount, (u < 0.5 * amount).to(x.dtype), x)


def speckle_noise(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    c = table_params(table, "speckle_noise", severity)
    return (x + x * draws.normal(x.shape, 0.0, c)).clamp_(0, 1)


FUNCTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}
