"""Torch backend, digital family: brightness, contrast, saturate, elastic transform,
pixelate, JPEG compression.

Brightness and saturate work in HSV like the reference (skimage) but in closed form: with
hue fixed, every RGB channel is affine in value and saturation.  Elastic transform is
deterministic given its two uniform random fields (smoothed with scipy's "reflect"
gaussian, bilinear sampling with "reflect" borders, as scipy's ``map_coordinates``).
Pixelate reproduces PIL's BOX downscale (0/1 box weights, horizontal then vertical pass,
each rounded to 8 bits as PIL does) and NEAREST upscale: its output is 8-bit.  JPEG is a
float re-implementation of baseline libjpeg (PIL's quality scaling of the standard tables,
JFIF YCbCr, 4:2:0 chroma subsampling, fancy upsampling on decode); it is close to PIL but
not bit-exact (libjpeg uses integer DCTs and fixed-point colour conversion).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._common import gaussian_filter, symmetric_index
from .draws import TorchDraws
from .tables import SEVERITY_TABLES, table_params

# the imagenet table's constants (kept for compatibility; see tables.py for all tables)
CONTRAST = SEVERITY_TABLES["imagenet"]["contrast"]
BRIGHTNESS = SEVERITY_TABLES["imagenet"]["brightness"]
SATURATE = SEVERITY_TABLES["imagenet"]["saturate"]
ELASTIC = SEVERITY_TABLES["imagenet"]["elastic_transform"]
PIXELATE = SEVERITY_TABLES["imagenet"]["pixelate"]
JPEG = SEVERITY_TABLES["imagenet"]["jpeg_compression"]


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


def _pil_pass(u: torch.Tensor, A: np.ndarray, dim: int) -> torch.Tensor:
    """One Pillow BOX pass on 8-bit values ``u`` along ``dim`` (-1 or -2), exact.  The
    non-zero weights of an output are all equal (1 / count, rounded to 22 bits: ``kk``), so
    the pass is a 0/1 box sum (exact in float32) times ``kk``, rounded and shifted like
    Pillow in float64 (exact: the products are integers below 2^53)."""
    if A.shape[0] == A.shape[1] and np.array_equal(A, np.eye(A.shape[0]) * (1 << _PRECISION)):
        return u  # Pillow skips a pass whose size does not change
    ones = torch.from_numpy((A > 0).astype(np.float32)).to(u.device)
    kk = torch.from_numpy(A.max(1)).to(u.device)
    S = torch.matmul(u, ones.T) if dim == -1 else torch.matmul(ones, u)
    kk = kk.view(-1) if dim == -1 else kk.view(-1, 1)
    if u.device.type == "mps":  # no float64: float weights, correct up to ties
        return torch.floor(S * (kk.float() / (1 << _PRECISION)) + 0.5).clamp_(0, 255)
    v = torch.floor((S.double() * kk + (1 << (_PRECISION - 1))) * (1.0 / (1 << _PRECISION)))
    return v.clamp_(0, 255).to(u.dtype)


def pixelate(x: torch.Tensor, severity: int, draws: TorchDraws | None = None, table: str = "imagenet") -> torch.Tensor:
    """Pillow BOX downscale to ``int(side c)`` (horizontal then vertical pass, each
    rounded to 8 bits with Pillow's fixed-point weights), then back up with NEAREST
    (imagecorruptions) or BOX (CIFAR / Tiny-ImageNet generators; upscaling, it copies the
    input pixel under each output centre).  Exact (the output is 8-bit)."""
    c = table_params(table, "pixelate", severity)
    H, W = x.shape[-2:]
    h, w = int(H * c), int(W * c)
    if h < 1 or w < 1:
        raise ValueError(f"`images` of size {H}x{W} are too small for 'pixelate' at severity {severity}: "
                         f"int(side x {c}) must be >= 1.")
    u = torch.round(x.float() * 255.0)  # Pillow sees uint8 images
    small = _pil_pass(u, box_matrix(W, w), -1)
    small = _pil_pass(small, box_matrix(H, h), -2)
    if table == "imagenet":
        ih, iw = nearest_index(h, H), nearest_index(w, W)
    else:
        ih = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.int64), h - 1)
        iw = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.int64), w - 1)
    out = small.index_select(-2, torch.from_numpy(ih).to(x.device)).index_select(-1, torch.from_numpy(iw).to(x.device))
    return (out / 255.0).to(x.dtype)


# -- JPEG ------------------------------------------------------------------------------
_LUMA_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64).reshape(8, 8)
_CHROMA_Q = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99], dtype=np.float64).reshape(8, 8)


def quant_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (baseline, 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


@lru_cache(maxsize=None)
def _dct_matrix() -> np.ndarray:
    k = np.arange(8)
    D = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * 0.5
    D[0] /= np.sqrt(2)
    return D  # orthonormal: coeffs = D @ block @ D.T


def _blocks_dct(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize the 8x8 blocks of p (N, H8, W8) in level-shifted units."""
    N, H, W = p.shape
    D = torch.from_numpy(_dct_matrix()).to(p.dtype).to(p.device)
    b = p.reshape(N, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4)
    c = D @ b @ D.T
    qt = torch.from_numpy(q).to(p.dtype).to(p.device)
    c = torch.round(c / qt) * qt
    b = D.T @ c @ D
    return b.permute(0, 1, 3, 2, 4).reshape(N, H, W)


def _fancy_upsample(c: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """libjpeg h2v2 "fancy" (triangular) chroma upsampling: each output sample is
    (9 nearest + 3 + 3 + 1 diagonal) / 16 of the four surrounding chroma samples."""
    def up1d(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        prev = torch.cat([t.narrow(dim, 0, 1), t.narrow(dim, 0, n - 1)], dim)
        nxt = torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim) if n > 1 else t
        a = 0.75 * t + 0.25 * prev
        b = 0.75 * t + 0.25 * nxt
        return torch.stack([a, b], dim + 1).flatten(dim, dim + 1)
    return up1d(up1d(c, 1), 2)[:, :H, :W]


def jpeg_compression(x: torch.Tensor, severity: int, draws: TorchDraws | None = None,
                     table: str = "imagenet") -> torch.Tensor:
    quality = table_params(table, "jpeg_compression", severity)
    B, C, H, W = x.shape
    rgb = x * 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128.0
    Hp, Wp = -(-H // 16) * 16, -(-W // 16) * 16
    ycc = torch.round(torch.stack([y, cb, cr], 1)).clamp_(0, 255)  # libjpeg works on uint8 samples
    if (Hp, Wp) != (H, W):  # libjpeg pads the last MCU by edge replication
        ycc = F.pad(ycc, (0, Wp - W, 0, Hp - H), mode="replicate")
    y = ycc[:, 0]
    chroma = torch.round(F.avg_pool2d(ycc[:, 1:], 2))  # (B, 2, Hp/2, Wp/2)
    ql, qc = quant_table(_LUMA_Q, quality), quant_table(_CHROMA_Q, quality)
    y = _blocks_dct(y - 128.0, ql) + 128.0
    hc, wc = chroma.shape[-2:]
    hc8, wc8 = -(-hc // 8) * 8, -(-wc // 8) * 8
    if (hc8, wc8) != (hc, wc):
        chroma = F.pad(chroma, (0, wc8 - wc, 0, hc8 - hc), mode="replicate")
    chroma = _blocks_dct(chroma.reshape(B * 2, hc8, wc8) - 128.0, qc).reshape(B, 2, hc8, wc8) + 128.0
    chroma = torch.round(chroma[..., :hc, :wc]).clamp_(0, 255)
    y = y[:, :H, :W]
    cb = _fancy_upsample(chroma[:, 0], H, W) - 128.0
    cr = _fancy_upsample(chroma[:, 1], H, W) - 128.0
    y = torch.round(y.clamp(0, 255))
    r = y + 1.402 * cr
    g = y - 0.344136286 * cb - 0.714136286 * cr
    b = y + 1.772 * cb
    out = torch.stack([r, g, b], 1).round().clamp(0, 255) / 255.0
    return out.to(x.dtype)


FUNCTIONS = {
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
