"""Random draws for the torch backend.

Every random corruption takes its random numbers from a :class:`TorchDraws` (a thin
wrapper around a ``torch.Generator`` on the images' device).  Tests substitute an object
with the same methods that replays NumPy's global RNG in the reference's order, which
makes the random corruptions comparable pixel by pixel too.
"""
from __future__ import annotations

import torch


class TorchDraws:
    """Draws from ``generator`` on ``device``; ``shape`` always starts with the batch."""

    def __init__(self, generator: torch.Generator, device, dtype=torch.float32) -> None:
        self.g = generator
        self.device = device
        self.dtype = dtype

    def uniform(self, shape, low: float, high: float) -> torch.Tensor:
        u = torch.rand(shape, generator=self.g, device=self.device, dtype=self.dtype)
        return u * (high - low) + low

    def normal(self, shape, loc: float, scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=self.g, device=self.device, dtype=self.dtype) * scale + loc

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rate, generator=self.g)

    def randint(self, high: torch.Tensor) -> torch.Tensor:
        """One integer per entry of ``high`` (long, any shape), uniform in [0, high)."""
        u = torch.rand(high.shape, generator=self.g, device=self.device, dtype=torch.float64)
        return torch.minimum((u * high).long(), high - 1)
