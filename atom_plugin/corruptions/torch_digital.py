"""Torch backend, digital family: brightness, contrast, saturate, elastic transform,
pixelate (JPEG compression is in :mod:`.torch_jpeg`).

Brightness and saturate work in HSV like the reference (skimage) but in closed form: with
hue fixed, every RGB channel is affine in value and saturation.  Elastic transform is
deterministic given its two uniform random fields (smoothed with scipy's "reflect"
gaussian, bilinear sampling with "reflect" borders, as scipy's ``map_coordinates``).
Pixelate reproduces PIL's BOX downscale (0/1 box weights, horizontal then vertical pass,
each rounded to 8 bits as PIL does) and NEAREST upscale: its output is 8-bit; on the CPU
it runs in chunks of images through scratch buffers kept between calls
(:mod:`._scratch`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._common import gaussian_filter, symmetric_index
from ._scratch import SCRATCH, chunks
from .draws import TorchDraws
from .tables import SEVERITY_TABLES, table_params

# the imagenet table's constants (kept for compatibility; see tables.py for all tables)
CONTRAST = SEVERITY_TABLES["imagenet"]["contrast"]
BRIGHTNESS = SEVERITY_TABLES["imagenet"]["brightness"]
SATURATE = SEVERITY_TABLES["imagenet"]["saturate"]
ELASTIC = SEVERITY_TABLES["imagenet"]["elastic_transform"]
PIXELATE = SEVERITY_TABLES["imagenet"]["pixelate"]


def contrast(x: torch.Tensor, severity: int, draws: TorchDraws | None = None, table: str = "imagenet") -> torch.Tensor:
    c = table_params(table, "contrast", severity)
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp_(0, 1)


def brightness(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
               table: str = "imagenet") -> torch.Tensor:
    """HSV value + c (clipped): RGB scales by v'/v; black pixels become gray v'."""
    c = table_params(table, "brightness", severity)
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    scale = torch.where(v > 0, v2 / v.clamp_min(1e-12), torch.zeros_like(v))
    return torch.where(v > 0, x * scale, v2.expand_as(x)).clamp_(0, 1)


def saturate(x: torch.Tensor, severity: int, draws: TorchDraws | None = None, table: str = "imagenet") -> torch.Tensor:
    """HSV saturation * a + b (clipped).  For s > 0: channel' = v - (s'/s)(v - channel);
    for gray pixels (s = 0, hue 0 in skimage): (v, v(1 - s'), v(1 - s'))."""
    a, b = table_params(table, "saturate", severity)
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    gray = delta == 0
    s = torch.where(gray, torch.zeros_like(v), delta / v.clamp_min(1e-12))
    s2 = (s * a + b).clamp(0, 1)
    colored = v - (s2 / s.clamp_min(1e-12)) * (v - x)
    red = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    return torch.where(gray, red, colored).clamp_(0, 1)


# -- elastic ---------------------------------------------------------------------------
def _smooth_field(u: torch.Tensor, sigma_h: float, sigma_w: float) -> torch.Tensor:
    """skimage gaussian(u, (sigma_h, sigma_w), mode="reflect", truncate=3) on (B, H, W)."""
    return gaussian_filter(u, sigma_h, mode="reflect", truncate=3.0, sigma_w=sigma_w)


def bilinear_reflect(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """scipy ``map_coordinates(order=1, mode="reflect")`` per channel: x (B, C, H, W),
    sample coordinates ys, xs (B, H', W') in pixels."""
    B, C, H, W = x.shape
    y0, x0 = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0).unsqueeze(1), (xs - x0).unsqueeze(1)
    y0, x0 = y0.long(), x0.long()
    ya, yb = symmetric_index(y0, H), symmetric_index(y0 + 1, H)
    xa, xb = symmetric_index(x0, W), symmetric_index(x0 + 1, W)
    flat = x.reshape(B, C, H * W)

    def g(yy, xx):
        idx = (yy * W + xx).reshape(B, 1, -1).expand(B, C, -1)
        return flat.gather(2, idx).reshape(B, C, *ys.shape[1:])

    return ((1 - fy) * ((1 - fx) * g(ya, xa) + fx * g(ya, xb)) + fy * ((1 - fx) * g(yb, xa) + fx * g(yb, xb)))


def elastic_fields(shape, draws: TorchDraws):
    """The two uniform fields (B, H, W) the reference draws (dx first, then dy)."""
    B, _, H, _ = shape
    m = H * 0.005
    ux = draws.uniform((B,) + tuple(shape[2:]), -m, m)
    uy = draws.uniform((B,) + tuple(shape[2:]), -m, m)
    return ux, uy


def elastic_transform(x: torch.Tensor, severity: int, draws: TorchDraws | None = None, table: str = "imagenet",
                      fields=None) -> torch.Tensor:
    """Displace by alpha * gaussian-smoothed uniform fields; ``fields`` = (ux, uy), each
    (B, H, W) uniform in +-0.005 H (drawn from ``draws`` when omitted).  CIFAR /
    Tiny-ImageNet tables: :func:`elastic_affine` (a random affine warp first)."""
    if table != "imagenet":
        return elastic_affine(x, severity, draws, table)
    B, C, H, W = x.shape
    alpha = table_params(table, "elastic_transform", severity)
    ux, uy = fields if fields is not None else elastic_fields(x.shape, draws)
    fdt = torch.float64 if x.device.type != "mps" else torch.float32
    dx = (_smooth_field(ux.to(fdt), H * 0.01, W * 0.01) * alpha).to(torch.float32)
    dy = (_smooth_field(uy.to(fdt), H * 0.01, W * 0.01) * alpha).to(torch.float32)
    gy = torch.arange(H, device=x.device, dtype=torch.float32).view(1, H, 1)
    gx = torch.arange(W, device=x.device, dtype=torch.float32).view(1, 1, W)
    # grid_sample (bilinear, reflection, align_corners=False) reflects about -0.5 and
    # n - 0.5 and clamps, which equals scipy's map_coordinates(order=1, mode="reflect").
    grid = torch.stack([(2 * (gx + dx) + 1) / W - 1, (2 * (gy + dy) + 1) / H - 1], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp_(0, 1)


def _mirror_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """cv2 BORDER_REFLECT_101 (scipy "mirror") index into [0, n)."""
    if n == 1:
        return torch.zeros_like(i)
    p = 2 * n - 2
    i = torch.remainder(i, p)
    return torch.where(i >= n, p - i, i)


def affine_fields(shape, affine: float, draws: TorchDraws) -> torch.Tensor:
    """The 3 x 2 random offsets of the affine warp's target points, (B, 3, 2) float32."""
    return draws.uniform((shape[0], 3, 2), -affine, affine).to(torch.float32)


def warp_affine_reflect101(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``cv2.warpAffine(img, getAffineTransform(pts1, pts1 + offsets), borderMode=
    BORDER_REFLECT_101)`` (bilinear) of the CIFAR-C elastic transform, per image: pts1 are
    the corners ``centre +- min(H, W) // 3`` written (row, col) as the generator does and
    read (x, y) by OpenCV.  Sampling: output pixel (x, y) reads the source at
    ``M^-1 (x, y)`` bilinearly, out-of-image taps mirrored (reflect-101)."""
    B, C, H, W = x.shape
    fdt = torch.float64 if x.device.type != "mps" else torch.float32
    c0, c1 = float(H // 2), float(W // 2)
    s = float(min(H, W) // 3)
    p1 = torch.tensor([[c0 + s, c1 + s], [c0 + s, c1 - s], [c0 - s, c1 - s]], dtype=fdt, device=x.device)
    p2 = p1.unsqueeze(0) + offsets.to(fdt)                                      # (B, 3, 2)
    # M (2 x 3) maps p1 -> p2: [p1 | 1] @ M^T = p2
    A = torch.cat([p1, torch.ones(3, 1, dtype=fdt, device=x.device)], 1).expand(B, 3, 3)
    Mt = torch.linalg.solve(A, p2)                                              # (B, 3, 2)
    a, b, c = Mt[:, 0, 0], Mt[:, 1, 0], Mt[:, 2, 0]   # x' = a x + b y + c
    d, e, f = Mt[:, 0, 1], Mt[:, 1, 1], Mt[:, 2, 1]   # y' = d x + e y + f
    det = a * e - b * d
    inv = torch.where(det != 0, 1.0 / det, torch.zeros_like(det))
    A11, A12, A21, A22 = e * inv, -b * inv, -d * inv, a * inv
    b1, b2 = -A11 * c - A12 * f, -A21 * c - A22 * f
    gy = torch.arange(H, device=x.device, dtype=fdt).view(1, H, 1)
    gx = torch.arange(W, device=x.device, dtype=fdt).view(1, 1, W)
    X = A11.view(B, 1, 1) * gx + A12.view(B, 1, 1) * gy + b1.view(B, 1, 1)
    Y = A21.view(B, 1, 1) * gx + A22.view(B, 1, 1) * gy + b2.view(B, 1, 1)
    x0, y0 = torch.floor(X), torch.floor(Y)
    fx, fy = (X - x0).unsqueeze(1).to(x.dtype), (Y - y0).unsqueeze(1).to(x.dtype)
    x0, y0 = x0.long(), y0.long()
    xa, xb = _mirror_index(x0, W), _mirror_index(x0 + 1, W)
    ya, yb = _mirror_index(y0, H), _mirror_index(y0 + 1, H)
    flat = x.reshape(B, C, H * W)

    def g(yy, xx):
        return flat.gather(2, (yy * W + xx).reshape(B, 1, -1).expand(B, C, -1)).reshape(B, C, H, W)

    return (1 - fy) * ((1 - fx) * g(ya, xa) + fx * g(ya, xb)) + fy * ((1 - fx) * g(yb, xa) + fx * g(yb, xb))


def elastic_affine(x: torch.Tensor, severity: int, draws: TorchDraws, table: str,
                   fields=None) -> torch.Tensor:
    """The CIFAR-10-C / Tiny-ImageNet-C elastic transform: a random affine warp (target
    points moved by uniform +-affine), then displacement by alpha x gaussian(sigma)-smoothed
    uniform(-1, 1) fields (scipy "reflect" borders, truncate 3), bilinear sampling with
    "reflect" borders; alpha, sigma, affine are fractions of the image height.  Draw
    order as the generator: the 6 affine offsets, then the x field, then the y field.
    ``fields`` = (offsets (B, 3, 2), ux (B, H, W), uy (B, H, W)) replaces the draws."""
    B, C, H, W = x.shape
    fa, fs, faff = table_params(table, "elastic_transform", severity)
    alpha, sigma, affine = H * fa, H * fs, H * faff
    if fields is None:
        offsets = affine_fields(x.shape, affine, draws)
        ux = draws.uniform((B, H, W), -1.0, 1.0)
        uy = draws.uniform((B, H, W), -1.0, 1.0)
    else:
        offsets, ux, uy = fields
    y = warp_affine_reflect101(x, offsets)
    fdt = torch.float64 if x.device.type != "mps" else torch.float32
    if sigma > 0:
        dx = _smooth_field(ux.to(fdt), sigma, sigma) * alpha
        dy = _smooth_field(uy.to(fdt), sigma, sigma) * alpha
    else:  # scipy skips a zero sigma
        dx, dy = ux.to(fdt) * alpha, uy.to(fdt) * alpha
    if alpha == 0:
        return y.clamp_(0, 1)
    dx, dy = dx.to(torch.float32).to(fdt), dy.to(torch.float32).to(fdt)
    gy = torch.arange(H, device=x.device, dtype=fdt).view(1, H, 1)
    gx = torch.arange(W, device=x.device, dtype=fdt).view(1, 1, W)
    # as in elastic_transform: grid_sample (reflection, align_corners=False) = scipy's
    # map_coordinates(order=1, mode="reflect")
    grid = torch.stack([(2 * (gx + dx) + 1) / W - 1, (2 * (gy + dy) + 1) / H - 1], dim=-1).to(x.dtype)
    return F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp_(0, 1)


# -- pixelate --------------------------------------------------------------------------
#: Pillow's fixed-point resampling precision (Resample.c: PRECISION_BITS = 32 - 8 - 2)
_PRECISION = 22


@lru_cache(maxsize=None)
def box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling of an 8-bit axis, (n_out, n_in): the integer fixed-point
    weights (2^22 = 1) Pillow uses; ``out = clip((M @ u + 2^21) >> 22, 0, 255)``.

    Pillow's box filter keeps input j for output o when ``-0.5 < (j + 0.5 - c) / s <= 0.5``
    with centre ``c = (o + 0.5) n_in / n_out`` and ``s = max(n_in / n_out, 1)``, over the
    window ``[int(c - s/2 + 0.5), int(c + s/2 + 0.5))``; the weights (1 / count) are
    rounded to 22 fractional bits."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    A = np.zeros((n_out, n_in))
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        t = (np.arange(lo, hi) - center + 0.5) / fscale
        w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if w.sum() > 0:
            w /= w.sum()
        A[o, lo:hi] = np.trunc(0.5 + w * (1 << _PRECISION))
    return A


@lru_cache(maxsize=None)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's NEAREST resize source index of each output pixel: Pillow walks the output
    accumulating ``x += n_in / n_out`` from ``0.5 n_in / n_out`` in double precision and
    truncates (ImagingScaleAffine), which differs from ``floor((o + 0.5) n_in / n_out)``
    where the exact value is an integer."""
    a = n_in / n_out
    xo = 0.5 * a
    out = np.empty(n_out, dtype=np.int64)
    for o in range(n_out):
        out[o] = int(xo)
        xo += a
    return np.minimum(out, n_in - 1)


@lru_cache(maxsize=256)
def _box_plan(n_in: int, n_out: int, device: torch.device):
    """Pillow's BOX pass ``n_in -> n_out`` as window sums and a rounding: output o sums the
    ``n_o`` consecutive inputs from ``lo_o`` (the 0/1 weights of :func:`box_matrix`).
    Returns ``(index (K, n_out), offset (n_out, 1), scale (n_out, 1))``: ``index[j]`` is
    ``lo + j``, or ``n_in`` (a zero row) past the window; Pillow's ``(S kk + 2^21) >> 22``
    (kk: its 22-bit weight 1 / n_o) equals ``floor((S + offset) * scale)`` in float32 for
    every 8-bit sum S (checked here exhaustively; such a form exists for every window count:
    all sides 1..1024 at every table's factor were checked)."""
    A = box_matrix(n_in, n_out)
    nz = A > 0
    n = nz.sum(1)
    lo = nz.argmax(1)
    K = int(n.max())
    idx = np.full((K, n_out), n_in, dtype=np.int64)
    off = np.zeros(n_out, dtype=np.float32)
    scale = np.zeros(n_out, dtype=np.float32)
    forms = {}
    for o in range(n_out):
        if n[o] == 0 or not nz[o, lo[o]:lo[o] + n[o]].all():  # pragma: no cover
            raise RuntimeError(f"pixelate {n_in} -> {n_out}: a Pillow BOX window is empty or not contiguous")
        idx[:n[o], o] = lo[o] + np.arange(n[o])
        key = (int(n[o]), int(A[o, lo[o]]))
        if key not in forms:
            S = np.arange(255 * key[0] + 1, dtype=np.int64)
            want = (S * key[1] + (1 << (_PRECISION - 1))) >> _PRECISION
            inv = np.float32(1.0) / np.float32(key[0])
            forms[key] = None
            for c in np.arange(0.25, key[0] + 0.25, 0.25, dtype=np.float32):
                if np.array_equal(np.floor((S.astype(np.float32) + c) * inv).astype(np.int64), want):
                    forms[key] = (c, inv)
                    break
        if forms[key] is None:  # pragma: no cover
            raise RuntimeError(f"pixelate {n_in} -> {n_out}: no exact float32 rounding for a window of {key[0]}")
        off[o], scale[o] = forms[key]
    return (torch.from_numpy(idx).to(device), torch.from_numpy(off).to(device).view(-1, 1),
            torch.from_numpy(scale).to(device).view(-1, 1))


def _box_rows(u: torch.Tensor, n_in: int, n_out: int, take) -> torch.Tensor:
    """Pillow's BOX pass over the rows (dim -2) of the 8-bit values ``u`` (..., n_in + 1, L)
    whose last row is zero, exact: each output row is the sum of its window's rows
    (whole-row index_selects), rounded as Pillow; (..., n_out, L)."""
    idx, off, scale = _box_plan(n_in, n_out, u.device)
    shape = (*u.shape[:-2], n_out, u.shape[-1])
    S = torch.index_select(u, -2, idx[0], out=take(shape, u.dtype, u.device))
    if idx.shape[0] > 1:
        T = take(shape, u.dtype, u.device)
        for j in range(1, idx.shape[0]):
            S.add_(torch.index_select(u, -2, idx[j], out=T))
    return S.add_(off).mul_(scale).floor_()


def _pixelate_chunk(x: torch.Tensor, out: torch.Tensor, h: int, w: int, ih, iw, take) -> None:
    B, C, H, W = x.shape
    dev, f32 = x.device, torch.float32
    # Pillow sees uint8 images: round(255 x), written transposed (B, C, W, H), plus a zero row
    ut = take((B, C, W + 1, H), f32, dev)
    torch.mul(x.transpose(-1, -2), 255.0, out=ut[:, :, :W]).round_()
    ut[:, :, W].zero_()
    if w != W:
        st = _box_rows(ut, W, w, take)                              # (B, C, w, H)
    else:  # Pillow skips a pass whose size does not change
        st = ut[:, :, :W]
    s = take((B, C, H + 1, w), f32, dev)
    s[:, :, :H].copy_(st.transpose(-1, -2))
    s[:, :, H].zero_()
    small = _box_rows(s, H, h, take) if h != H else s[:, :, :H]     # (B, C, h, w)
    small = small.div_(255.0)
    if w != W:
        small = torch.gather(small, -1, iw.view(1, 1, 1, W).expand(B, C, h, W), out=take((B, C, h, W), f32, dev))
    if h != H:
        torch.index_select(small, -2, ih, out=out)
    else:
        out.copy_(small)


def pixelate(x: torch.Tensor, severity: int, draws: TorchDraws | None = None, table: str = "imagenet") -> torch.Tensor:
    """Pillow BOX downscale to ``int(side c)`` (horizontal then vertical pass, each
    rounded to 8 bits with Pillow's fixed-point weights), then back up with NEAREST
    (imagecorruptions) or BOX (CIFAR / Tiny-ImageNet generators; upscaling, it copies the
    input pixel under each output centre).  Exact (the output is 8-bit).  The horizontal
    pass runs on the transposed image, so that both passes add whole rows."""
    c = table_params(table, "pixelate", severity)
    B, C, H, W = x.shape
    h, w = int(H * c), int(W * c)
    if h < 1 or w < 1:
        raise ValueError(f"`images` of size {H}x{W} are too small for 'pixelate' at severity {severity}: "
                         f"int(side x {c}) must be >= 1.")
    if table == "imagenet":
        ih, iw = nearest_index(h, H), nearest_index(w, W)
    else:
        ih = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.int64), h - 1)
        iw = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.int64), w - 1)
    ih, iw = torch.from_numpy(ih).to(x.device), torch.from_numpy(iw).to(x.device)
    xf = x.detach().to(torch.float32)
    out = torch.empty(xf.shape, dtype=torch.float32, device=x.device)
    for sl in chunks(xf):
        SCRATCH.reset()
        _pixelate_chunk(xf[sl], out[sl], h, w, ih, iw, SCRATCH.take)
    return out.to(x.dtype)


FUNCTIONS = {
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
}
