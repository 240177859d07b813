"""Backend ``"torch"``: batched corruptions on the images' device (dispatch table)."""
from __future__ import annotations

import torch

from . import torch_blur, torch_digital, torch_jpeg, torch_noise, torch_weather
from ._common import SeedLike, make_generator, to_gray
from .draws import TorchDraws
from .tables import resolve_table

FUNCTIONS = {**torch_noise.FUNCTIONS, **torch_blur.FUNCTIONS, **torch_weather.FUNCTIONS, **torch_digital.FUNCTIONS,
             **torch_jpeg.FUNCTIONS}


def corrupt_torch(images: torch.Tensor, name: str, severity: int, seed: SeedLike = None,
                  draws: TorchDraws | None = None, table: str = "auto") -> torch.Tensor:
    """Corrupt ``images`` (B, C, H, W) in [0, 1], C in {1, 3}, on their device, with the
    severity ``table`` (``"auto"``: by image size, see :mod:`.tables`)."""
    table = resolve_table(table, images.shape[-2], images.shape[-1], "torch")
    x = images.detach()
    C = x.shape[1]
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.float()
    if C == 1:
        x = x.expand(-1, 3, -1, -1)
    if draws is None:
        draws = TorchDraws(make_generator(seed, x.device), x.device, torch.float32)
    out = FUNCTIONS[name](x.contiguous(), severity, draws, table)
    if C == 1:
        out = to_gray(out)
    return out.to(dtype).contiguous()
