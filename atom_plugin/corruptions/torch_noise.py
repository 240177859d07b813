"""Torch backend, noise family: gaussian, shot, impulse, speckle noise.

All four add independent per-element noise with the reference's severity parameters; they
match the reference in distribution (the reference draws from NumPy, we draw from a
``torch.Generator``)."""
from __future__ import annotations

import math

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


def shot_noise(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    c = table_params(table, "shot_noise", severity)
    if getattr(draws, "dtype", torch.float32) == torch.float64:
        # replayed NumPy draws: NumPy's Poisson sampler consumes a rate-dependent number of
        # uniforms, so the rates must be the reference's float64 (uint8 / 255) * c exactly
        rate = torch.round(x.double() * 255.0) / 255.0 * c
        return (draws.poisson(rate) / c).clamp_(0, 1).to(x.dtype)
    # torch.poisson is exact and, on the CPU, faster than the inversion sampler and than a
    # tabulated (guide table) inversion we tried; MPS has no torch.poisson
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
