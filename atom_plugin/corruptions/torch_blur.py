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

from ._common import fft_size, filter_matrix, gaussian_filter, pad2d
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


#: singular values of the disk below this fraction of the largest are dropped: they change
#: the output by less than 1e-9 (float32 resolves 6e-8)
DEFOCUS_RANK_TOL = 1e-8


@lru_cache(maxsize=64)
def _defocus_matrices(H: int, W: int, radius: float, alias_blur: float, dtype: torch.dtype = torch.float64,
                      device: str = "cpu"):
    """The disk kernel as a sum of r rank-one (separable) kernels (its rank is 3..7), each a
    pair of (n, n) filter matrices with the reflect-101 border, stacked for two products
    without copies: ``Mw`` (W, r W) with columns (s, w') and ``Mh`` (H, H r) with columns
    (h, s), so that ``out = Mh @ (x @ Mw).view(.., H r, W)`` (the (H, r W) rows of
    ``x @ Mw`` read as (H r, W) are ordered (h, s))."""
    k = disk_kernel(radius, alias_blur).astype(np.float64)
    u, s, vt = np.linalg.svd(k)
    r = int((s > s[0] * DEFOCUS_RANK_TOL).sum())
    A = np.stack([filter_matrix(H, tuple(u[:, i] * np.sqrt(s[i])), "mirror") for i in range(r)], 1)     # (H, r, H)
    Bw = np.stack([filter_matrix(W, tuple(vt[i] * np.sqrt(s[i])), "mirror").T for i in range(r)], 1)   # (W, r, W)
    Mw = torch.from_numpy(Bw.reshape(W, r * W)).to(dtype).to(device)
    Mh = torch.from_numpy(A.transpose(0, 2, 1).reshape(H, H * r)).to(dtype).to(device)
    return Mh, Mw, r


@lru_cache(maxsize=32)
def _defocus_spectrum(Hp: int, Wp: int, radius: float, alias_blur: float, dtype: torch.dtype, device: str):
    """rfft2 of the disk kernel laid out for correlation by circular convolution on an
    (Hp, Wp) grid: g[-a mod Hp, -b mod Wp] = kernel[a, b]."""
    k = disk_kernel(radius, alias_blur).astype(np.float64)
    n = k.shape[0]
    g = np.zeros((Hp, Wp))
    a = (-np.arange(n)) % Hp
    b = (-np.arange(n)) % Wp
    g[np.ix_(a, b)] = k
    return torch.fft.rfft2(torch.from_numpy(g).to(dtype)).to(device)


#: images with at least this many pixels are defocused by FFT (cv2.filter2D switches to a
#: DFT for large kernels too); smaller ones by the separable matmuls
DEFOCUS_FFT_PIXELS = 64 * 64
#: the FFT path works on chunks of images of about this many bytes (once padded)
DEFOCUS_FFT_CHUNK_BYTES = 1 << 20
#: the separable path works on chunks whose (C, H, r W) intermediate has about this many bytes
DEFOCUS_MM_CHUNK_BYTES = 1 << 21


def defocus_blur(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
                 table: str = "imagenet") -> torch.Tensor:
    """cv2.filter2D with the reference's disk (reflect-101 border): for small images as a
    short sum of separable filters (two small matmuls, exact: the disk's rank is 3..7),
    for large ones by FFT of the reflect-101 padded image (float rounding only)."""
    B, C, H, W = x.shape
    radius, alias_blur = table_params(table, "defocus_blur", severity)
    if H * W >= DEFOCUS_FFT_PIXELS and x.device.type != "mps":
        r = (disk_kernel(radius, alias_blur).shape[0] - 1) // 2
        # correlation by circular convolution on a grid of a fast FFT length >= the padded
        # image (the zero-filled tail is never read by the kept outputs)
        Hp, Wp = fft_size(H + 2 * r), fft_size(W + 2 * r)
        G = _defocus_spectrum(Hp, Wp, radius, alias_blur, x.dtype, str(x.device))
        ksum = float(disk_kernel(radius, alias_blur).astype(np.float64).sum())
        # on the CPU in chunks of ~DEFOCUS_FFT_CHUNK_BYTES (cache-sized buffers)
        per = max(1, DEFOCUS_FFT_CHUNK_BYTES // (C * Hp * Wp * x.element_size())) if x.device.type == "cpu" else B
        out = torch.empty_like(x)
        for i in range(0, B, per):
            # each image channel minus its mean (added back times the kernel's sum): the
            # FFT's rounding error scales with the signal, which loses its large DC term
            xc = x[i:i + per]
            m = xc.mean((-2, -1), keepdim=True)
            # reflect-101, as cv2 (F.pad's reflect needs r < the side; pad2d bounces further)
            xp = F.pad(xc - m, (r, r, r, r), mode="reflect") if r < min(H, W) else pad2d(xc - m, r, "mirror")
            y = torch.fft.irfft2(torch.fft.rfft2(xp, s=(Hp, Wp)).mul_(G), s=(Hp, Wp))
            out[i:i + per] = y[..., :H, :W].add_(m * ksum)
        return out.clamp_(0, 1)
    Mh, Mw, r = _defocus_matrices(H, W, radius, alias_blur, x.dtype, str(x.device))
    # on the CPU by chunks whose (C, H, r W) intermediate stays in the caches
    per = max(1, DEFOCUS_MM_CHUNK_BYTES // (C * H * r * W * x.element_size())) if x.device.type == "cpu" else B
    if per >= B:
        return torch.matmul(Mh, torch.matmul(x, Mw).view(B, C, H * r, W)).clamp_(0, 1)
    out = torch.empty_like(x)
    for i in range(0, B, per):
        xc = x[i:i + per]
        torch.matmul(Mh, torch.matmul(xc, Mw).view(xc.shape[0], C, H * r, W), out=out[i:i + per])
    return out.clamp_(0, 1)


# -- gaussian --------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
                  table: str = "imagenet") -> torch.Tensor:
    return gaussian_filter(x, table_params(table, "gaussian_blur", severity)).clamp_(0, 1)


# -- glass -----------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _sweep(H: int, W: int, delta: int):
    """Positions of the reference's pixel-shuffle sweep in sweep order, and each pixel's
    step number in it (``H W`` = never visited).

    The reference visits pixel (h, w) for h = H - delta .. delta + 1 (outer, descending)
    and w = W - delta .. delta + 1 (inner, descending) and writes
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with (h', w') = (h + dy, w + dx),
    dy, dx in [-delta, delta).  On NumPy/numba row views this tuple "swap" is a copy:
    ``x[h, w]`` gets ``x[h', w']`` and ``x[h', w']`` keeps its value (the second
    assignment copies the already overwritten view back).  So every pixel is written at
    most once per sweep, at its own step."""
    hs = np.arange(H - delta, delta, -1)
    ws = np.arange(W - delta, delta, -1)
    if hs.size == 0 or ws.size == 0:
        return None
    pos = (hs[:, None] * W + ws[None, :]).ravel()
    step = np.full(H * W, H * W, dtype=np.int64)
    step[pos] = np.arange(pos.size)
    return torch.from_numpy(pos), torch.from_numpy(step)


def glass_shuffle_sources(H: int, W: int, delta: int, d: torch.Tensor) -> torch.Tensor:
    """The source pixel of every pixel after one sweep, ``(B, H W)`` long, given the
    offsets ``d`` (B, N, 2) = (dx, dy) of the N steps in sweep order."""
    B = d.shape[0]
    src = _glass_sources_flat(H, W, delta, d[..., 1] * W + d[..., 0])
    return src.view(B, H * W) - (torch.arange(B, device=d.device) * (H * W)).view(B, 1)


def _glass_sources_flat(H: int, W: int, delta: int, shift: torch.Tensor) -> torch.Tensor:
    """:func:`glass_shuffle_sources` as indices into the flattened batch, ``(B H W,)``,
    given the steps' partner shifts ``dy W + dx`` (B, N) long.

    Step p copies the current value of its partner q.  If q is visited before p, that
    value is what q itself got, so p's source is q's source; otherwise it is q's original
    value.  So every pixel points to its partner when that was visited earlier (else to
    itself), the chains (of strictly earlier steps) are resolved by pointer doubling (a
    few ``index_select`` of the batch's pointers), and a pixel's source is the partner of
    the end of its chain: exact for the same offsets, without the sequential sweep."""
    pos, step = _sweep(H, W, delta)
    d = shift
    pos, step = pos.to(d.device), step.to(d.device)
    B, n = d.shape[:2]
    HW = H * W
    partner = d + pos.view(1, -1)                                                      # (B, n)
    follow = step.index_select(0, partner.view(-1)).view(B, n) < step.index_select(0, pos).view(1, -1)
    off = (torch.arange(B, device=d.device) * HW).view(B, 1)
    gpart = partner.add_(off)                                                          # global
    src = torch.arange(B * HW, device=d.device)
    src.view(B, HW).scatter_(1, pos.expand(B, -1), gpart)  # the source if the chain ends here
    if not bool(follow.any()):
        return src
    nxt = torch.arange(B * HW, device=d.device)
    nxt.view(B, HW).scatter_(1, pos.expand(B, -1), torch.where(follow, gpart, pos.view(1, -1) + off))
    while True:  # at most log2(chain length) rounds
        nxt2 = nxt.index_select(0, nxt)
        if torch.equal(nxt2, nxt):
            return src.index_select(0, nxt)
        nxt = nxt2


def _glass_shifts(draws, B: int, n: int, H: int, W: int, delta: int, device) -> torch.Tensor:
    """The partner shifts dy W + dx (B, n) long of a sweep's steps, (dx, dy) uniform
    integers in [-delta, delta): from a torch generator one integer per step, uniform over
    the (2 delta)^2 pairs, mapped by a table; from other draws (replays of the reference)
    the (B, n, 2) offsets of their ``integers`` (or ``uniform``)."""
    g = getattr(draws, "g", None)
    if isinstance(g, torch.Generator):
        m = 2 * delta
        pair = torch.arange(m * m, device=g.device)
        table = (pair // m - delta) * W + (pair % m - delta)   # v -> (dx, dy) = (v % m, v // m) - delta
        v = torch.randint(0, m * m, (B * n,), generator=g, device=g.device, dtype=torch.int32)
        return table.index_select(0, v).view(B, n).to(device)
    if hasattr(draws, "integers"):
        d = draws.integers((B, n, 2), -delta, delta)
    else:
        d = torch.floor(draws.uniform((B, n, 2), -delta, delta)).long()
    return (d[..., 1] * W + d[..., 0]).to(device)


#: glass blur works on chunks of about this many bytes of images (with their index arrays,
#: they stay in the caches)
GLASS_CHUNK_BYTES = 1 << 20


def glass_blur(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    """Gaussian blur, uint8 truncation, local pixel shuffle, gaussian blur (reference
    algorithm; the sequential sweep is resolved exactly by pointer doubling, see
    :func:`_glass_sources_flat`, batched over images; the sweeps' permutations are composed
    before one gather of the image).  All offsets are drawn first (batch, then sweep), the
    rest runs on chunks of images."""
    sigma, delta, iters = table_params(table, "glass_blur", severity)
    B, C, H, W = x.shape
    sw = _sweep(H, W, delta)
    # one (dx, dy) per step of the sweep, uniform integers in [-delta, delta)
    ds = [] if sw is None else [_glass_shifts(draws, B, sw[0].numel(), H, W, delta, x.device) for _ in range(iters)]
    per = max(1, GLASS_CHUNK_BYTES // (C * H * W * x.element_size()))
    out = torch.empty_like(x)
    for i in range(0, B, per):
        xc = x[i:i + per]
        b = xc.shape[0]
        y = gaussian_filter(xc, sigma).mul_(255.0).floor_().div_(255.0)
        if ds:
            src = None
            for d in ds:
                s = _glass_sources_flat(H, W, delta, d[i:i + per])
                src = s if src is None else src.index_select(0, s)  # this sweep reads the previous result
            # y's flat index of channel 0 of every source pixel; channel c reads from c H W on
            base = src.view(b, H * W).add_((torch.arange(b, device=x.device) * ((C - 1) * H * W)).view(b, 1)).view(-1)
            flat = y.reshape(-1)
            yc = torch.empty(C, b * H * W, dtype=x.dtype, device=x.device)  # channels first
            for c in range(C):
                torch.index_select(flat[c * H * W:], 0, base, out=yc[c])
            out[i:i + per] = gaussian_filter(yc.view(C, b, H, W), sigma).clamp_(0, 1).transpose(0, 1)
        else:
            out[i:i + per] = gaussian_filter(y, sigma).clamp_(0, 1)
    return out


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
#: on the CPU, images with at most this many pixels take the row-gather path (copies of
#: whole shifted rows and one weighted sum per block, see :func:`_motion_blur_rows`; measured
#: 2-3x faster than the per-tap paths up to 64x64, slower than the shifted views from 96x96)
MOTION_ROWS_PIXELS = 64 * 64
#: bytes of gathered rows per step of the row-gather path (they stay in the caches)
MOTION_ROWS_BYTES = 1 << 20
#: on the CPU, larger images with at least this many pixels take the shifted-view path (per
#: image and tap), smaller ones the batched gathers (fewer Python steps)
MOTION_VIEW_PIXELS = 40 * 40


def _motion_taps(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor, early_stop: bool):
    """The reference's taps: shifts dy, dx (B, 2 radius + 1) long (the output at (h, w)
    reads the input at (h - dy, w - dx)) and weights (B, 2 radius + 1) in ``x.dtype``,
    zero from the first shift that reaches the image size on when ``early_stop``."""
    H, W = x.shape[-2:]
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
    return dy, dx, (k.view(1, -1) * ok).to(x.dtype)  # zero after the first out-of-image shift


def motion_blur_layer(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor,
                      early_stop: bool = True, out_size: tuple | None = None) -> torch.Tensor:
    """The reference's ``_motion_blur`` on a batch: ``x`` (B, C, H, W), ``angle`` (B,) in
    degrees.  Sum over i of ``kernel[i]`` times ``x`` shifted by the i-th rounded point of
    the line at ``angle`` (edge replicated); with ``early_stop`` stops, without
    renormalizing, at the first shift that reaches the image size (as ``imagecorruptions``
    does; ImageMagick's MotionBlurImage, used by the CIFAR / Tiny-ImageNet generators, does
    not stop).  ``out_size`` = (h, w): only the top-left h x w of the result."""
    Ho, Wo = out_size if out_size is not None else x.shape[-2:]
    if x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= MOTION_ROWS_PIXELS:
        return _motion_blur_rows(x, *_motion_taps(x, radius, sigma, angle, early_stop), Ho, Wo)
    if x.device.type == "cpu" and x.shape[0] > MOTION_CHUNK:
        out = torch.cat([_motion_blur_chunk(x[i:i + MOTION_CHUNK], radius, sigma, angle[i:i + MOTION_CHUNK],
                                            early_stop) for i in range(0, x.shape[0], MOTION_CHUNK)])
    else:
        out = _motion_blur_chunk(x, radius, sigma, angle, early_stop)
    return out[..., :Ho, :Wo]


def _motion_blur_rows(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, w: torch.Tensor,
                      Ho: int, Wo: int) -> torch.Tensor:
    """Motion blur as copies of whole rows: every tap of an image reads, for each output
    row, one contiguous run of ``Wo`` values of the padded image (a row of an overlapping
    strided view of it), so one ``index_select`` gathers the (taps, channels, rows) runs
    of a block of rows and one ``bmm`` with the (1, taps) weights sums them.  Blocks are
    whole images (or bands of rows of large ones) of about MOTION_ROWS_BYTES."""
    B, C, H, W = x.shape
    live = (w != 0).any(0).nonzero()
    if live.numel() == 0:
        return x.new_zeros(B, C, Ho, Wo)
    T = int(live.max()) + 1                       # taps beyond are zero for every image
    dy, dx, w = dy[:, :T], dx[:, :T], w[:, :T]
    hb = max(1, min(Ho, MOTION_ROWS_BYTES // (T * C * Wo * x.element_size())))  # rows per block
    nb = -(-Ho // hb)
    # columns: replicated edges (concatenated, per chunk of images); rows: clamped sources
    left, right = max(0, int(dx.max())), max(0, Wo - int(dx.min()) - W)
    Wp = W + left + right
    U = B * nb                                                  # units: (image, block)
    unit = torch.arange(U, device=x.device)
    unit_img = unit // nb
    h = (unit % nb).view(U, 1, 1) * hb + torch.arange(hb, device=x.device).view(1, 1, hb)
    src = (h - dy.index_select(0, unit_img).unsqueeze(2)).clamp_(0, H - 1) * Wp  # (U, T, hb)
    src += (unit_img * (C * H * Wp)).view(U, 1, 1) + (left - dx).index_select(0, unit_img).unsqueeze(2)
    chan = (torch.arange(C, device=x.device) * (H * Wp)).view(1, 1, C, 1)
    wu = w.index_select(0, unit_img).unsqueeze(1)               # (U, 1, T)
    out = torch.empty(U, 1, C * hb * Wo, dtype=x.dtype, device=x.device)
    per = max(1, MOTION_ROWS_BYTES // (T * C * hb * Wo * x.element_size()))      # units per step
    ipc = max(1, MOTION_ROWS_BYTES // (C * H * Wp * x.element_size()))           # images per padded chunk
    for i0 in range(0, B, ipc):
        i1 = min(B, i0 + ipc)
        xc = x[i0:i1]
        xp = torch.cat([xc[..., :1].expand(i1 - i0, C, H, left), xc, xc[..., -1:].expand(i1 - i0, C, H, right)], -1)
        flat = xp.reshape(-1)
        rows = flat.as_strided((flat.numel() - Wo + 1, Wo), (1, 1))  # rows[k] = flat[k:k + Wo]
        base = chan - i0 * (C * H * Wp)                             # this chunk's first image at 0
        for s in range(i0 * nb, i1 * nb, per):
            e = min(i1 * nb, s + per)
            idx = src[s:e].unsqueeze(2) + base                      # (units, T, C, hb)
            g = rows.index_select(0, idx.view(-1)).view(e - s, T, C * hb * Wo)
            torch.bmm(wu[s:e], g, out=out[s:e])
    out = out.view(B, nb, C, hb, Wo).transpose(1, 2).reshape(B, C, nb * hb, Wo)
    return out[:, :, :Ho]


def _motion_blur_chunk(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor,
                       early_stop: bool = True) -> torch.Tensor:
    B, C, H, W = x.shape
    width = 2 * radius + 1
    dy, dx, w = _motion_taps(x, radius, sigma, angle, early_stop)
    P = width - 1 if not early_stop else min(width - 1, max(H, W) - 1)
    Hp, Wp = H + 2 * P, W + 2 * P
    # out[h, w] = sum_i w_i xpad[h + P - dy_i, w + P - dx_i]: one gather per tap i
    xp = F.pad(x, (P, P, P, P), mode="replicate").reshape(B, C, Hp * Wp)
    base = (torch.arange(H, device=x.device).view(H, 1) * Wp + torch.arange(W, device=x.device).view(1, W)).view(1, 1, -1)
    off = ((P - dy).clamp(0, 2 * P) * Wp + (P - dx).clamp(0, 2 * P)).view(B, width, 1)
    if x.device.type == "cpu" and H * W >= MOTION_VIEW_PIXELS:
        # on the CPU: one strided multiply-add of a shifted view per image and tap (no
        # index tensors; 3-6x faster than the gathers below)
        xp = xp.view(B, C, Hp, Wp)
        out = torch.zeros(B, C, H, W, device=x.device, dtype=x.dtype)
        oy = (P - dy).clamp(0, 2 * P).tolist()
        ox = (P - dx).clamp(0, 2 * P).tolist()
        ws = w.tolist()
        for bi in range(B):
            ob, xb = out[bi], xp[bi]
            for t in range(width):
                if ws[bi][t] != 0.0:
                    ob.add_(xb[:, oy[bi][t]:oy[bi][t] + H, ox[bi][t]:ox[bi][t] + W], alpha=ws[bi][t])
        return out
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
