"""Per-thread scratch memory and chunking for the CPU paths of pixelate and JPEG.

Their multi-megabyte intermediates are views of buffers kept between calls (see
:class:`Scratch`); batches are processed in chunks of at most :data:`CHUNK_PIXELS` pixels on
the CPU, whole elsewhere.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

__all__ = ["CHUNK_PIXELS", "SCRATCH_CAP", "Scratch", "SCRATCH", "chunks", "fill_edges"]

#: pixels per chunk of images processed at once on the CPU (bounds the scratch memory)
CHUNK_PIXELS = 1 << 17
#: largest scratch buffer kept between calls, per dtype and thread
SCRATCH_CAP = 64 << 20


class Scratch(threading.local):
    """Per-thread scratch memory for the CPU paths of JPEG and pixelate.  Their multi-megabyte
    intermediates are views of buffers kept between calls: a fresh large tensor costs a page
    fault per 4 KiB on first touch (when the C allocator has returned the memory to the OS),
    which was most of these corruptions' time.  ``reset()`` starts a chunk (every earlier view
    is dead by then); ``take`` hands out the next slice, or a fresh tensor when the buffer is
    too small (the next ``reset`` grows it, up to ``SCRATCH_CAP`` bytes).  Other devices get
    fresh tensors (their allocators cache)."""

    def __init__(self):
        self.bufs, self.used, self.want = {}, {}, {}

    def reset(self):
        for dt, n in self.want.items():
            buf = self.bufs.get(dt)
            if (buf is None or buf.numel() < n) and n * torch.finfo(dt).bits // 8 <= SCRATCH_CAP:
                self.bufs[dt] = torch.empty(n, dtype=dt)
        self.used = {}

    def take(self, shape, dtype, device):
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        n = int(np.prod(shape))
        start = self.used.get(dtype, 0)
        end = start + -(-n // 16) * 16                                  # 64-byte aligned slices
        self.used[dtype] = end
        self.want[dtype] = max(self.want.get(dtype, 0), end)
        buf = self.bufs.get(dtype)
        if buf is None or buf.numel() < end:
            return torch.empty(shape, dtype=dtype)
        return buf[start:start + n].view(shape)


SCRATCH = Scratch()


def chunks(x: torch.Tensor):
    """Slices of the batch with at most ``CHUNK_PIXELS`` pixels (at least one image) on the
    CPU, the whole batch elsewhere."""
    B, _, H, W = x.shape
    k = B if x.device.type != "cpu" else max(1, CHUNK_PIXELS // (H * W))
    return [slice(i, min(i + k, B)) for i in range(0, B, k)]


def fill_edges(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Replicate the last column ``w - 1`` and row ``h - 1`` of ``t`` (..., H, W) over the rest."""
    if w < t.shape[-1]:
        t[..., :h, w:] = t[..., :h, w - 1:w]
    if h < t.shape[-2]:
        t[..., h:, :] = t[..., h - 1:h, :]
    return t
