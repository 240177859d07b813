"""Small helpers shared by the corruption backends: seeds, gray images, filters."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Union

import numpy as np
import torch

SeedLike = Optional[Union[int, torch.Generator]]

#: ITU-R 601 luma weights (cv2 RGB2GRAY, PIL "L").
LUMA = (0.299, 0.587, 0.114)


def seed_to_int(seed: SeedLike) -> int:
    """An int seed from ``None`` (torch's global RNG), an int, or a torch.Generator."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, (1,)))
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**31 - 1, (1,), generator=seed, device=seed.device))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be None, an int or a torch.Generator, got {type(seed).__name__}.")
    return int(seed)


def make_generator(seed: SeedLike, device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device``: ``seed`` itself if it is one (its device must
    match), else a new generator seeded with ``seed`` (or from torch's global RNG)."""
    if isinstance(seed, torch.Generator):
        if torch.device(seed.device).type != torch.device(device).type:
            raise ValueError(
                f"`seed` is a torch.Generator on {seed.device} but the images are on {device}; "
                "create the generator with torch.Generator(device=images.device)."
            )
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(seed_to_int(seed))
    return g


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) -> (B, 1, H, W)."""
    w = x.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def gaussian_kernel1d(sigma: float, radius: int, dtype=torch.float64) -> torch.Tensor:
    """scipy.ndimage's normalized 1-D Gaussian of ``radius`` (2 radius + 1 taps), computed
    with scipy's own arithmetic (``exp(-0.5 / sigma^2 * x^2)`` in NumPy, then normalized):
    the same float64 bits."""
    t = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * t ** 2)
    return torch.from_numpy(phi / phi.sum()).to(dtype)


def symmetric_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Map integer indices to [0, n) with half-sample symmetric reflection
    (scipy mode "reflect": d c b a | a b c d | d c b a)."""
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def pad_index(n: int, pad: int, mode: str, device) -> torch.Tensor:
    """Source indices of a length ``n + 2 pad`` padded axis for ``mode`` in
    {"nearest" (replicate), "reflect" (half-sample symmetric), "mirror" (reflect-101)}."""
    idx = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest":
        return idx.clamp(0, n - 1)
    if mode == "reflect":
        return symmetric_index(idx, n)
    if mode == "mirror":
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * n - 2
        idx = torch.remainder(idx, period)
        return torch.where(idx >= n, period - idx, idx)
    raise ValueError(mode)


def pad2d(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` by ``pad`` with a scipy-style ``mode`` (works for
    any pad, also larger than the image)."""
    if pad == 0:
        return x
    H, W = x.shape[-2:]
    ih = pad_index(H, pad, mode, x.device)
    iw = pad_index(W, pad, mode, x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


@lru_cache(maxsize=128)
def filter_matrix(n: int, kernel: tuple, mode: str) -> np.ndarray:
    """(n, n) matrix of 1-D correlation with ``kernel`` (odd length) on a length-``n`` axis
    with scipy-style borders ``mode``: ``out = M @ x``."""
    k = np.asarray(kernel, dtype=np.float64)
    r = (k.size - 1) // 2
    src = pad_index(n, r, mode, "cpu").numpy()
    M = np.zeros((n, n))
    for o in range(n):
        np.add.at(M[o], src[o:o + 2 * r + 1], k)
    return M


@lru_cache(maxsize=64)
def filter_tensor(n: int, kernel: tuple, mode: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    """:func:`filter_matrix` as a tensor (cached per dtype and device)."""
    return torch.from_numpy(filter_matrix(n, kernel, mode)).to(dtype).to(device)


#: axes longer than this are filtered by output blocks of this length: each block reads
#: only the inputs within the kernel's reach (a sub-block of the filter matrix), which
#: cuts the multiply-adds per element from n to SEP_BLOCK + taps - 1 (measured 1.4-3x
#: faster than the whole (n, n) products from 64 to 224 px)
SEP_BLOCK = 32


def _filter_axis(x: torch.Tensor, M: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Filter axis ``dim`` (-1: ``x @ M.T``; -2: ``M @ x``) of ``x`` with the (n, n) matrix
    ``M``, by output blocks when the axis is long; ``r``: the kernel's radius (output o
    reads inputs within o +- r only, whatever the border mode)."""
    def product(xs, Ms):
        return torch.matmul(xs, Ms.T) if dim == -1 else torch.matmul(Ms, xs)

    n = x.shape[dim]
    if n <= SEP_BLOCK:
        return product(x, M)
    out = torch.empty_like(x)
    for lo in range(0, n, SEP_BLOCK):
        hi = min(n, lo + SEP_BLOCK)
        a, c = max(0, lo - r), min(n, hi + r)
        out.narrow(dim, lo, hi - lo).copy_(product(x.narrow(dim, a, c - a), M[lo:hi, a:c]))
    return out


def separable_filter(x: torch.Tensor, kernel_h, kernel_w=None, mode: str = "nearest") -> torch.Tensor:
    """Correlate the last two axes of ``x`` with 1-D kernels (odd length; ``kernel_w``
    defaults to ``kernel_h``), borders as scipy ``mode``; done as small matmuls with the
    filter matrices (by blocks of outputs on long axes)."""
    H, W = x.shape[-2:]
    kh = tuple(float(v) for v in kernel_h)
    kw = kh if kernel_w is None else tuple(float(v) for v in kernel_w)
    Mh = filter_tensor(H, kh, mode, x.dtype, str(x.device))
    Mw = filter_tensor(W, kw, mode, x.dtype, str(x.device))
    if H <= SEP_BLOCK and W <= SEP_BLOCK:
        return torch.matmul(torch.matmul(Mh, x), Mw.T)
    return _filter_axis(_filter_axis(x, Mw, (len(kw) - 1) // 2, -1), Mh, (len(kh) - 1) // 2, -2)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0,
                    sigma_w: float | None = None) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter over the last two axes (skimage.filters.gaussian
    defaults: mode "nearest", truncate 4); ``sigma_w`` for a different sigma along W."""
    sigma_w = sigma if sigma_w is None else sigma_w
    return separable_filter(x, gaussian_taps(float(sigma), float(truncate)),
                            gaussian_taps(float(sigma_w), float(truncate)), mode)


@lru_cache(maxsize=256)
def gaussian_taps(sigma: float, truncate: float = 4.0) -> tuple:
    """scipy's Gaussian taps (radius int(truncate sigma + 0.5)) as a tuple of floats."""
    return tuple(gaussian_kernel1d(sigma, int(truncate * sigma + 0.5)).tolist())


@lru_cache(maxsize=None)
def fft_size(n: int) -> int:
    """The smallest length >= n that is a multiple of 4 with no prime factor above 7: FFTs
    of these lengths are fast (torch's CPU FFT, measured over 44..260: 1.2-2x the time per
    element of a power of two, against up to 4x for lengths with a large prime factor, e.g.
    244 = 4 x 61 -> 252 is 2.5x faster); a zero-filled tail leaves the linear
    convolutions that fit in n unchanged."""
    m = max(4, -(-int(n) // 4) * 4)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 4


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / float(b)))
