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
        if low == 0 and high == 1:
            return u  # u * 1 + 0 is u
        return u.mul_(high - low).add_(low)

    def normal(self, shape, loc: float, scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=self.g, device=self.device, dtype=self.dtype).mul_(scale).add_(loc)

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rate, generator=self.g)

    def integers(self, shape, low: int, high: int) -> torch.Tensor:
        """Uniform integers in [low, high) (long), e.g. glass blur's offsets."""
        return torch.randint(int(low), int(high), tuple(shape), generator=self.g, device=self.device)

    def randint(self, high: torch.Tensor) -> torch.Tensor:
        """One integer per entry of ``high`` (long, any shape), uniform in [0, high)."""
        fdt = torch.float32 if torch.device(self.device).type == "mps" else torch.float64
        u = torch.rand(high.shape, generator=self.g, device=self.device, dtype=fdt)
        return torch.minimum((u * high).long(), high - 1)


class NumpyDraws:
    """Replays NumPy's global RNG in the reference's draw order, for a batch of ONE image
    (used to check the torch backend against ``imagecorruptions`` pixel by pixel: seed
    NumPy, run the reference; seed NumPy again, run the torch backend with these draws)."""

    device = torch.device("cpu")
    dtype = torch.float64

    @staticmethod
    def _layout(draw, shape):
        """Per-pixel draws (shape (1, C, H, W)) come in the reference's (H, W, C) order."""
        shape = tuple(shape)[1:]
        if len(shape) == 3 and shape[0] in (1, 3):
            return torch.from_numpy(draw(shape[1:] + shape[:1])).permute(2, 0, 1)[None]
        return torch.from_numpy(draw(shape))[None]

    def uniform(self, shape, low, high):
        import numpy as np

        return self._layout(lambda sz: np.asarray(np.random.uniform(low, high, size=sz)), shape)

    def normal(self, shape, loc, scale):
        import numpy as np

        return self._layout(lambda sz: np.asarray(np.random.normal(size=sz, loc=loc, scale=scale)), shape)

    def randint(self, high):
        import numpy as np

        return torch.tensor([np.random.randint(0, int(high.reshape(-1)[0]))])

    def poisson(self, rate):
        """``np.random.poisson`` over the reference's (H, W, C) layout; ``rate`` (1, C, H, W)."""
        import numpy as np

        hwc = rate[0].permute(1, 2, 0).to(torch.float64).numpy()
        return torch.from_numpy(np.random.poisson(hwc).astype(np.float64)).permute(2, 0, 1)[None]


class GlassBlurDraws:
    """The integer offsets of the reference's glass blur for ``seed`` (numba's
    ``np.random.randint`` equals NumPy's legacy ``RandomState.randint``), batch of one."""

    device = torch.device("cpu")

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.rs = np.random.RandomState(seed)

    def uniform(self, shape, low, high):
        import numpy as np

        vals = self.rs.randint(int(low), int(high), size=tuple(shape)[1:]).astype(np.float64)
        return torch.from_numpy(vals)[None]

    def integers(self, shape, low, high):
        return self.uniform(shape, low, high).long()
