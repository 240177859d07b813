"""Torch backend, blur family: defocus, glass, motion, zoom and gaussian blur.

All five follow the reference's kernels and border modes exactly (cv2 reflect-101 for
defocus, scipy "nearest" for the gaussians, edge replication for motion, scipy
``zoom(order=1)`` for zoom): defocus, zoom and gaussian blur are deterministic; motion blur
is exact given its random angle (including the reference's early stop when a shift leaves
the image); glass blur is exact given its random integer offsets (the reference's
sequential sweep runs as wavefronts of independent steps, see ``_wavefronts``).
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._common import filter_matrix, gaussian_filter
from .draws import TorchDraws
from .tables import SEVERITY_TABLES, table_params

# the imagenet table's constants (kept for compatibility; see tables.py for all tables)
DEFOCUS = SEVERITY_TABLES["imagenet"]["defocus_blur"]
GLASS = SEVERITY_TABLES["imagenet"]["glass_blur"]
MOTION = SEVERITY_TABLES["imagenet"]["motion_blur"]
GAUSSIAN = SEVERITY_TABLES["imagenet"]["gaussian_blur"]


def zoom_factors(severity: int, table: str = "imagenet") -> np.ndarray:
    start, stop, step = table_params(table, "zoom_blur", severity)
    return np.arange(start, stop, step)


# -- defocus ---------------------------------------------------------------------------
def _cv2_gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    t = np.arange(ksize) - (ksize - 1) / 2.0
    k = np.exp(-0.5 * t * t / (sigma * sigma))
    return k / k.sum()


@lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: a binary disk normalized to sum 1, blurred by
    cv2.GaussianBlur (3x3 or 5x5, reflect-101 border)."""
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = 3 if radius <= 8 else 5
    X, Y = np.meshgrid(L, L)
    d = ((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float64)
    d /= d.sum()
    g = _cv2_gaussian_1d(ksize, alias_blur)
    r = ksize // 2
    n = d.shape[0]
    idx = np.arange(-r, n + r)
    idx = np.where(idx < 0, -idx, idx)
    idx = np.where(idx >= n, 2 * n - 2 - idx, idx)
    p = d[idx][:, idx]
    out = np.zeros_like(d)
    for i in range(ksize):
        for j in range(ksize):
            out += g[i] * g[j] * p[i:i + n, j:j + n]
    return out.astype(np.float32)


@lru_cache(maxsize=None)
def _defocus_matrices(H: int, W: int, radius: float, alias_blur: float):
    """The disk kernel as a sum of rank-one (separable) kernels (exact: its rank is
    3..7), each a pair of (n, n) filter matrices with the reflect-101 border."""
    k = disk_kernel(radius, alias_blur).astype(np.float64)
    u, s, vt = np.linalg.svd(k)
    r = int((s > s[0] * 1e-9).sum())
    Mh = np.concatenate([filter_matrix(H, tuple(u[:, i] * np.sqrt(s[i])), "mirror") for i in range(r)], 1)  # (H, rH)
    Mw = np.concatenate([filter_matrix(W, tuple(vt[i] * np.sqrt(s[i])), "mirror") for i in range(r)], 0)  # (rW, W)
    return torch.from_numpy(Mh), torch.from_numpy(Mw), r


def defocus_blur(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
                 table: str = "imagenet") -> torch.Tensor:
    """cv2.filter2D with the reference's disk (reflect-101 border), computed exactly as a
    short sum of separable filters (two small matmuls)."""
    B, C, H, W = x.shape
    Mh, Mw, r = _defocus_matrices(H, W, *table_params(table, "defocus_blur", severity))
    Mh, Mw = Mh.to(x.dtype).to(x.device), Mw.to(x.dtype).to(x.device)
    t = torch.matmul(x, Mw.T).view(B, C, H, r, W).transpose(2, 3).reshape(B, C, r * H, W)
    return torch.matmul(Mh, t).clamp_(0, 1)


# -- gaussian --------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
                  table: str = "imagenet") -> torch.Tensor:
    return gaussian_filter(x, table_params(table, "gaussian_blur", severity)).clamp_(0, 1)


# -- glass -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _wavefronts(H: int, W: int, delta: int):
    """Sweep positions of the reference's pixel shuffle grouped into wavefronts.

    The reference visits pixel (h, w) for h = H - delta .. delta + 1 (outer, descending)
    and w = W - delta .. delta + 1 (inner, descending) and writes
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with (h', w') = (h + dy, w + dx),
    dy, dx in [-delta, delta).  On NumPy/numba row views this tuple "swap" is a copy:
    ``x[h, w]`` gets ``x[h', w']`` and ``x[h', w']`` keeps its value (the second
    assignment copies the already overwritten view back).  Step (h, w) writes (h, w) and
    reads within [-delta, delta) of it, so two steps depend on each other only if their
    rows differ by at most delta and their columns by at most delta.  With
    ``a = delta + 1`` and ``t = a (h0 - h) + (w0 - w)``, dependent steps keep their
    sequential order and steps with equal ``t`` are independent, so running the wavefronts
    in increasing ``t`` (each one vectorized) is exactly the sequential sweep.
    Returns (flat positions (N,), position order in the sweep (N,), wavefront bounds)."""
    h0, w0 = H - delta, W - delta
    hs = np.arange(h0, delta, -1)
    ws = np.arange(w0, delta, -1)
    if hs.size == 0 or ws.size == 0:
        return None
    a = delta + 1
    hh, ww = np.meshgrid(hs, ws, indexing="ij")
    seq = np.arange(hh.size).reshape(hh.shape)  # index of the swap in the sweep
    t = a * (h0 - hh) + (w0 - ww)
    order = np.argsort(t.ravel(), kind="stable")
    tt = t.ravel()[order]
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], tt, [tt[-1] + 1]]))).tolist()
    pos = (hh * W + ww).ravel()[order]
    return torch.from_numpy(pos), torch.from_numpy(seq.ravel()[order]), bounds


def glass_blur(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    """Gaussian blur, uint8 truncation, local pixel shuffle, gaussian blur (reference
    algorithm; the sequential sweep runs as wavefronts of independent steps, exact for
    the same random offsets, batched over images)."""
    sigma, delta, iters = table_params(table, "glass_blur", severity)
    B, C, H, W = x.shape
    y = torch.floor(gaussian_filter(x, sigma) * 255.0) / 255.0
    wf = _wavefronts(H, W, delta)
    if wf is not None:
        pos, seq, bounds = wf
        pos, seq = pos.to(x.device), seq.to(x.device)
        n = pos.numel()
        flat = y.reshape(B, C, H * W).clone()
        for _ in range(iters):
            # one (dx, dy) per step of the sweep, uniform integers in [-delta, delta)
            d = torch.floor(draws.uniform((B, n, 2), -delta, delta)).long()
            d = d[:, seq]                                        # (B, N, 2) in wavefront order
            partner = pos.view(1, -1) + d[..., 1] * W + d[..., 0]  # (B, N)
            for s, e in zip(bounds[:-1], bounds[1:]):
                q = partner[:, s:e].unsqueeze(1).expand(B, C, e - s)
                flat.index_copy_(2, pos[s:e], flat.gather(2, q))
        y = flat.view(B, C, H, W)
    return gaussian_filter(y, sigma).clamp_(0, 1)


# -- motion ----------------------------------------------------------------------------
def motion_kernel(radius: int, sigma: float) -> np.ndarray:
    width = 2 * radius + 1
    t = np.arange(width)
    k = np.exp(-(t ** 2) / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    return k / k.sum()


#: on the CPU, motion blur works on chunks of at most this many images: its per-tap gathers
#: read a padded copy of the batch, which stops fitting in the caches beyond that (measured:
#: 1.9 -> 1.1 ms per 32x32 image for the 5 severities at batch 256).  GPUs take the batch whole.
MOTION_CHUNK = 64


def motion_blur_layer(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor,
                      early_stop: bool = True) -> torch.Tensor:
    """The reference's ``_motion_blur`` on a batch: ``x`` (B, C, H, W), ``angle`` (B,) in
    degrees.  Sum over i of ``kernel[i]`` times ``x`` shifted by the i-th rounded point of
    the line at ``angle`` (edge replicated); with ``early_stop`` stops, without
    renormalizing, at the first shift that reaches the image size (as ``imagecorruptions``
    does; ImageMagick's MotionBlurImage, used by the CIFAR / Tiny-ImageNet generators, does
    not stop)."""
    if x.device.type == "cpu" and x.shape[0] > MOTION_CHUNK:
        return torch.cat([_motion_blur_chunk(x[i:i + MOTION_CHUNK], radius, sigma, angle[i:i + MOTION_CHUNK],
                                             early_stop) for i in range(0, x.shape[0], MOTION_CHUNK)])
    return _motion_blur_chunk(x, radius, sigma, angle, early_stop)


def _motion_blur_chunk(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor,
                       early_stop: bool = True) -> torch.Tensor:
    B, C, H, W = x.shape
    width = 2 * radius + 1
    fdt = torch.float64 if x.device.type != "mps" else torch.float32
    k = torch.from_numpy(motion_kernel(radius, sigma)).to(fdt).to(x.device)
    rad = angle.to(fdt) * (math.pi / 180.0)
    p0, p1 = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.sqrt(p0 * p0 + p1 * p1)
    i = torch.arange(width, device=x.device, dtype=fdt).view(1, -1)
    dy = -torch.ceil(i * p0.view(-1, 1) / hyp.view(-1, 1) - 0.5).long()  # (B, n)
    dx = -torch.ceil(i * p1.view(-1, 1) / hyp.view(-1, 1) - 0.5).long()
    ok = (dy.abs() < H) & (dx.abs() < W)
    if not early_stop:
        ok = torch.ones_like(ok)
    ok = torch.cumprod(ok.long(), dim=1).to(fdt)
    w = (k.view(1, -1) * ok).to(x.dtype)  # (B, n); zero after the first out-of-image shift
    P = width - 1 if not early_stop else min(width - 1, max(H, W) - 1)
    Hp, Wp = H + 2 * P, W + 2 * P
    # out[h, w] = sum_i w_i xpad[h + P - dy_i, w + P - dx_i]: one gather per tap i
    xp = F.pad(x, (P, P, P, P), mode="replicate").reshape(B, C, Hp * Wp)
    base = (torch.arange(H, device=x.device).view(H, 1) * Wp + torch.arange(W, device=x.device).view(1, W)).view(1, 1, -1)
    off = ((P - dy).clamp(0, 2 * P) * Wp + (P - dx).clamp(0, 2 * P)).view(B, width, 1)
    out = torch.zeros(B, C, H * W, device=x.device, dtype=x.dtype)
    for t in range(width):
        idx = (base + off[:, t].unsqueeze(1)).expand(B, C, H * W)
        out += w[:, t].view(B, 1, 1) * xp.gather(2, idx)
    return out.view(B, C, H, W)


def motion_blur(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    radius, sigma = table_params(table, "motion_blur", severity)
    angle = draws.uniform((x.shape[0],), -45.0, 45.0)
    out = motion_blur_layer(x, radius, sigma, angle, early_stop=table == "imagenet").clamp_(0, 1)
    if table != "imagenet":  # ImageMagick (the CIFAR / Tiny-ImageNet generators) returns 8 bits
        out = torch.round(out * 255.0) / 255.0
    return out


# -- zoom ------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def zoom_matrix(n: int, zoom: float, crop: bool = True, centre: bool = False) -> np.ndarray:
    """Matrix of the reference's ``clipped_zoom`` along one axis: centre crop of
    ceil(n / zoom), scipy.ndimage.zoom order 1 (grid_mode False) to round(crop * zoom)
    outputs, (n, n) keeping the first n outputs when ``crop`` (the n outputs from
    ``(outputs - n) // 2`` with ``centre``, as the CIFAR / Tiny-ImageNet generators trim)
    else (round(crop*zoom), n)."""
    ch = int(np.ceil(n / float(zoom)))
    top = (n - ch) // 2
    out_len = int(round(ch * zoom))
    scale = (ch - 1) / (out_len - 1) if out_len > 1 else 1.0
    rows = n if crop else out_len
    first = max((out_len - n) // 2, 0) if (crop and centre) else 0
    A = np.zeros((rows, n))
    for o in range(rows):
        t = (o + first) * scale
        i0 = int(np.floor(t))
        f = t - i0
        if i0 >= ch - 1:
            i0, f = ch - 1, 0.0
        A[o, top + i0] += 1.0 - f
        if f > 0:
            A[o, top + i0 + 1] += f
    return A


def clipped_zoom(x: torch.Tensor, zooms, centre: bool = False) -> torch.Tensor:
    """Sum over ``zooms`` of the reference's ``clipped_zoom(x, z)``; x (B, C, H, W)."""
    H, W = x.shape[-2:]
    Z = len(zooms)
    B, C = x.shape[:2]
    Ah = torch.from_numpy(np.concatenate([zoom_matrix(H, float(z), True, centre) for z in zooms], 1)).to(x.dtype).to(x.device)
    Aw = torch.from_numpy(np.concatenate([zoom_matrix(W, float(z), True, centre) for z in zooms], 0)).to(x.dtype).to(x.device)
    t = torch.matmul(x, Aw.T).view(B, C, H, Z, W).transpose(2, 3).reshape(B, C, Z * H, W)
    return torch.matmul(Ah, t)  # (H, Z H) @ (B, C, Z H, W)


@lru_cache(maxsize=16)
def _zoom_blur_operator(H: int, W: int, severity: int, table: str = "imagenet"):
    """The whole zoom blur as one sparse (HW, HW) float64 matrix (scipy CSR):
    ``(identity + sum_z kron(A_z^H, A_z^W)) / (Z + 1)``, about 8-13 non-zeros per row."""
    import scipy.sparse as sp

    zs = zoom_factors(severity, table)
    centre = table != "imagenet"
    M = sp.identity(H * W, format="csr")
    for z in zs:
        M = M + sp.kron(sp.csr_matrix(zoom_matrix(H, float(z), True, centre)),
                        sp.csr_matrix(zoom_matrix(W, float(z), True, centre)), "csr")
    return (M / (len(zs) + 1)).tocsr()


@lru_cache(maxsize=16)
def _zoom_blur_tensor(H: int, W: int, severity: int, dtype: torch.dtype, device: str,
                      table: str = "imagenet") -> torch.Tensor:
    """:func:`_zoom_blur_operator` as a torch sparse CSR tensor on ``device`` (cached; ~12
    non-zeros per pixel, e.g. 150 KB at 32x32)."""
    M = _zoom_blur_operator(H, W, severity, table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)), torch.from_numpy(M.indices.astype(np.int64)),
            torch.from_numpy(M.data), size=M.shape).to(device=device, dtype=dtype)


def _zoom_blur_sparse(x: torch.Tensor, severity: int, table: str = "imagenet") -> torch.Tensor:
    """Zoom blur as one sparse-dense product (CPU and CUDA): ~15x faster than the two
    dense products per zoom factor of :func:`clipped_zoom` on 32x32 images."""
    B, C, H, W = x.shape
    op = _zoom_blur_tensor(H, W, severity, x.dtype, str(x.device), table)
    out = op @ x.reshape(B * C, H * W).T.contiguous()  # (HW, BC)
    return out.T.reshape(B, C, H, W)


#: (device type, dtype) pairs whose sparse CSR product failed: they take the dense path
_NO_SPARSE: set = set()


def zoom_blur(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
              table: str = "imagenet") -> torch.Tensor:
    key = (x.device.type, x.dtype)
    if x.device.type in ("cpu", "cuda") and x.dtype in (torch.float32, torch.float64) and key not in _NO_SPARSE:
        try:
            return _zoom_blur_sparse(x, severity, table).clamp_(0, 1)
        except (RuntimeError, NotImplementedError):  # no sparse CSR kernel in this build
            _NO_SPARSE.add(key)
    zs = zoom_factors(severity, table)  # the same operator as two dense products per zoom factor
    return ((x + clipped_zoom(x, zs, table != "imagenet")) / (len(zs) + 1)).clamp_(0, 1)


FUNCTIONS = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
}
