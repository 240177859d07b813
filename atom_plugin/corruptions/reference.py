"""Backend ``"imagecorruptions"``: the reference implementation, per image on the CPU.

Each image is converted to uint8 HWC (``round(255 x)``), corrupted by the
``imagecorruptions`` package (the maintained fork ``imagecorruptions-imaug``), and
converted back to float in [0, 1] on the input's device.  ``imagecorruptions`` draws from
NumPy's global RNG: we seed it once per call (from ``seed``) and restore its previous
state afterwards; ``impulse_noise`` and ``glass_blur`` take an explicit seed, which we
draw from the seeded global RNG per image, so a call is reproducible for a fixed seed.
Single-channel images are replicated to RGB, corrupted, and converted back with the
ITU-R 601 luma weights.
"""
from __future__ import annotations

import numpy as np
import torch

from ._common import LUMA, SeedLike, seed_to_int

_SEEDED = ("impulse_noise", "glass_blur")


def _module():
    try:
        import imagecorruptions
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='imagecorruptions' needs the imagecorruptions package; install it with "
            "`pip install imagecorruptions-imaug` (works with NumPy 2), or use backend='torch'."
        ) from e
    return imagecorruptions


def corrupt_reference(images: torch.Tensor, name: str, severity: int, seed: SeedLike = None) -> torch.Tensor:
    """Corrupt ``images`` (B, C, H, W) in [0, 1] with ``imagecorruptions``; C in {1, 3}."""
    ic = _module()
    B, C, H, W = images.shape
    arr = (images.detach().to("cpu", torch.float32) * 255.0).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).numpy()
    if C == 1:
        arr = np.repeat(arr, 3, axis=3)
    out = np.empty((B, H, W, 3), dtype=np.uint8)
    state = np.random.get_state()
    try:
        np.random.seed(seed_to_int(seed) % (2**32))
        for i in range(B):
            kwargs = {"seed": int(np.random.randint(0, 2**31 - 1))} if name in _SEEDED else {}
            out[i] = ic.corrupt(np.ascontiguousarray(arr[i]), severity=severity, corruption_name=name, **kwargs)
    finally:
        np.random.set_state(state)
    res = torch.from_numpy(out).to(torch.float32).div_(255.0).permute(0, 3, 1, 2)
    if C == 1:
        res = (res * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return res.to(device=images.device, dtype=images.dtype).contiguous()
