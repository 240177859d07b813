"""Torch backend, weather family: snow, frost, fog (+ spatter, an extra corruption).

Snow, frost and fog are deterministic given their random draws (same draws, same
order as the reference: snow = normal layer + motion angle; frost = texture index + crop
corner; fog = the plasma fractal's uniforms), so they match the reference pixel by pixel
when the draws are replayed, and in distribution otherwise.  Frost uses the six frost
textures shipped with ``imagecorruptions`` (loaded and resized once per image size with
OpenCV, as the reference does, then kept on the images' device).  Spatter follows the
reference step by step: with replayed draws (float64) the Gaussian is scipy's arithmetic
bit for bit and the water variant (1-3: OpenCV's Canny, its float32 chamfer distance
transform, cv2.blur, equalizeHist, the relief filter) gives the reference's 8-bit image;
the mud variant (4, 5) too, in float64 (its colour is added in float64).  On the CPU, Canny
and the distance transform are OpenCV's own functions (faster there); the tensor versions
(any device) give the same bits.
"""
from __future__ import annotations

from functools import lru_cache

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._common import filter_tensor, gaussian_taps, pad2d, to_gray
from .draws import TorchDraws
from .tables import FROST_SCALE, FROST_TEXTURES, NATIVE_SIZE, SEVERITY_TABLES, table_params
from .torch_blur import motion_blur_layer, zoom_matrix

# the imagenet table's constants (kept for compatibility; see tables.py for all tables)
SNOW = SEVERITY_TABLES["imagenet"]["snow"]
FROST = SEVERITY_TABLES["imagenet"]["frost"]
FOG = SEVERITY_TABLES["imagenet"]["fog"]
SPATTER = SEVERITY_TABLES["imagenet"]["spatter"]


# -- snow ------------------------------------------------------------------------------
def snow(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    """imagecorruptions: the zoomed layer keeps all its rows for the blur, which stops at
    the image size, and is cropped after; CIFAR / Tiny-ImageNet: the zoomed layer is
    trimmed centred to H x W, truncated to 8 bits (PNG) and blurred by ImageMagick."""
    loc, scale, zoom, thr, radius, sigma, blend = table_params(table, "snow", severity)
    B, C, H, W = x.shape
    imagenet = table == "imagenet"
    layer = draws.normal((B, H, W), loc, scale).to(x.dtype)
    Ah = torch.from_numpy(zoom_matrix(H, float(zoom), not imagenet, True)).to(x.dtype).to(x.device)
    Aw = torch.from_numpy(zoom_matrix(W, float(zoom), not imagenet, True)).to(x.dtype).to(x.device)
    layer = torch.einsum("ph,bhw,qw->bpq", Ah, layer, Aw)  # may be larger than H x W
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp_(0, 1)
    if not imagenet:
        layer = torch.floor(layer * 255) / 255
    angle = draws.uniform((B,), -135.0, -45.0)
    layer = motion_blur_layer(layer.unsqueeze(1), radius, sigma, angle, early_stop=imagenet, out_size=(H, W))
    layer = torch.round(layer * 255) / 255
    y = torch.maximum(x, to_gray(x).mul_(1.5).add_(0.5)).mul_(1 - blend).add_(x, alpha=blend)
    return y.add_(layer).add_(layer.flip(-1, -2)).clamp_(0, 1)


# -- frost -----------------------------------------------------------------------------
def _fitting_scale(fh: int, fw: int, H: int, W: int) -> float:
    """imagecorruptions' texture scale: 1 when the texture covers the image, else the
    factor that makes it cover (the larger one when both sides are short)."""
    if fh >= H and fw >= W:
        return 1
    if fh < H and fw >= W:
        return H / fh
    if fh >= H and fw < W:
        return W / fw
    return max(H / fh, W / fw)


@lru_cache(maxsize=8)
def _frost_textures_cpu(H: int, W: int, table: str = "imagenet"):
    """The rescaled frost textures (RGB uint8) for images of size H x W: imagecorruptions
    fits the six textures to the image (x 1.1, bicubic); the CIFAR / Tiny-ImageNet
    generators scale the first five by a fixed factor (0.2 / 0.3, bilinear) and crop
    32 / 64 pixels from them (a texture too small for a larger image is scaled to fit)."""
    import importlib.resources

    import cv2

    textures = []
    root = importlib.resources.files("imagecorruptions")
    names = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
    for name in names[:FROST_TEXTURES[table]]:
        with importlib.resources.as_file(root / "frost" / name) as path:
            img = cv2.imread(str(path))
        fh, fw = img.shape[:2]
        if table == "imagenet":
            s = _fitting_scale(fh, fw, H, W) * 1.1
            img = cv2.resize(img, dsize=(int(np.ceil(fw * s)), int(np.ceil(fh * s))), interpolation=cv2.INTER_CUBIC)
        else:
            f = FROST_SCALE[table]
            small = cv2.resize(img, (0, 0), fx=f, fy=f)
            if small.shape[0] > H and small.shape[1] > W:
                img = small
            else:
                s = _fitting_scale(fh, fw, H + 1, W + 1) * 1.1
                img = cv2.resize(img, dsize=(int(np.ceil(fw * s)), int(np.ceil(fh * s))),
                                 interpolation=cv2.INTER_CUBIC)
        textures.append(np.ascontiguousarray(img[..., ::-1]))
    hm = max(t.shape[0] for t in textures)
    wm = max(t.shape[1] for t in textures)
    stack = np.zeros((len(textures), hm, wm, 3), dtype=np.uint8)
    for i, t in enumerate(textures):
        stack[i, : t.shape[0], : t.shape[1]] = t
    sizes = np.array([t.shape[:2] for t in textures], dtype=np.int64)
    return torch.from_numpy(stack), torch.from_numpy(sizes)


_FROST_DEVICE_CACHE: dict = {}


def frost_textures(H: int, W: int, device, table: str = "imagenet") -> tuple[torch.Tensor, torch.Tensor]:
    key = (H, W, str(device), table)
    if key not in _FROST_DEVICE_CACHE:
        stack, sizes = _frost_textures_cpu(H, W, table)
        _FROST_DEVICE_CACHE[key] = (stack.to(device), sizes.to(device))
    return _FROST_DEVICE_CACHE[key]


def frost(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    a, b = table_params(table, "frost", severity)
    B, C, H, W = x.shape
    stack, sizes = frost_textures(H, W, x.device, table)
    idx = draws.randint(torch.full((B,), len(sizes), device=x.device, dtype=torch.long))
    top = draws.randint(sizes[idx, 0] - H)
    left = draws.randint(sizes[idx, 1] - W)
    rows = top.view(B, 1, 1) + torch.arange(H, device=x.device).view(1, H, 1)
    cols = left.view(B, 1, 1) + torch.arange(W, device=x.device).view(1, 1, W)
    crop = stack[idx.view(B, 1, 1), rows, cols].permute(0, 3, 1, 2).to(x.dtype) / 255.0  # (B, 3, H, W)
    return (a * x + b * crop).clamp_(0, 1)


# -- fog -------------------------------------------------------------------------------
def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, draws: TorchDraws, dtype=torch.float32):
    """Batched diamond-square heightmaps (batch, mapsize, mapsize) in [0, 1], the
    reference's algorithm and draw order."""
    M = torch.zeros((batch, mapsize, mapsize), device=draws.device, dtype=dtype)
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * draws.uniform(a.shape, -wibble, wibble).to(dtype)

    while step >= 2:
        h = step // 2
        corner = M[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        M[:, h::step, h::step] = wibbled(sq)
        dr = M[:, h::step, h::step]
        ul = M[:, 0::step, 0::step]
        M[:, 0::step, h::step] = wibbled(dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2))
        M[:, h::step, 0::step] = wibbled(dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1))
        step //= 2
        wibble /= wibbledecay
    M = M - M.amin(dim=(1, 2), keepdim=True)
    return M / M.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet",
        plasma: torch.Tensor | None = None) -> torch.Tensor:
    """``plasma`` (B, >=H, >=W) in [0, 1] replaces the random heightmap when given.  The
    map's side is the next power of two >= the image (imagecorruptions), and at least the
    table's native size for CIFAR (32) / Tiny-ImageNet (64), as their generators use."""
    a, decay = table_params(table, "fog", severity)
    B, C, H, W = x.shape
    if plasma is None:
        side = max(H, W, C)
        if table != "imagenet":
            side = max(side, NATIVE_SIZE[table])
        mapsize = 1 if side == 0 else 2 ** (side - 1).bit_length()
        plasma = plasma_fractal(B, mapsize, decay, draws, x.dtype)
    p = plasma[:, :H, :W].unsqueeze(1).to(x.dtype)
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + a * p) * m / (m + a)).clamp_(0, 1)


# -- spatter ---------------------------------------------------------------------------
def _gaussian_axis(x: torch.Tensor, k: tuple, dim: int) -> torch.Tensor:
    """Correlate axis ``dim`` (-2 or -1) of ``x`` with the odd symmetric kernel ``k``,
    borders "nearest".  float64: scipy's own arithmetic (centre tap, then the pairs from the
    outermost in, each pair summed then scaled: bit for bit).  float32: a dense (n, n)
    product on short axes, else shifted views (fused multiply-adds), whose cost grows as
    n r instead of n^2 per line."""
    r = (len(k) - 1) // 2
    n = x.shape[dim]
    exact = x.dtype == torch.float64
    if not exact and n < 6 * (2 * r + 1):
        M = filter_tensor(n, k, "nearest", x.dtype, str(x.device))
        return torch.matmul(M, x) if dim == -2 else torch.matmul(x, M.T)
    p = F.pad(x, (0, 0, r, r) if dim == -2 else (r, r, 0, 0), mode="replicate")
    y = p.narrow(dim, r, n) * k[r]
    pair = torch.empty_like(y)  # one buffer for the pairs (fresh large tensors cost page faults)
    for j in range(r, 0, -1):
        torch.add(p.narrow(dim, r - j, n), p.narrow(dim, r + j, n), out=pair)
        if exact:
            y += pair.mul_(k[r + j])
        else:
            y.add_(pair, alpha=k[r + j])
    return y


def _gaussian(x: torch.Tensor, sigma: float, between=None) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(x, sigma) (mode "nearest", truncate 4) over the last two
    axes, H then W as scipy does; bit for bit in float64 (the replayed draws).  ``between``:
    the dtype scipy stores the first pass in (float32 for a float32 image)."""
    k = gaussian_taps(float(sigma))
    y = _gaussian_axis(x, k, -2)
    if between is not None:
        y = y.to(between).to(x.dtype)
    return _gaussian_axis(y, k, -1)


def _pad101(t: torch.Tensor) -> torch.Tensor:
    """Pad the last two axes by one pixel with OpenCV's default border (reflect-101)."""
    if t.is_floating_point() and t.shape[-1] >= 2 and t.shape[-2] >= 2:
        return F.pad(t, (1, 1, 1, 1), mode="reflect")
    return pad2d(t, 1, "mirror")


def _box_sum3(t: torch.Tensor) -> torch.Tensor:
    """Sums over the 3 x 3 window of (B, 1, H, W) ``t`` with reflect-101 borders (cv2.blur's
    window), as two separable passes of shifted views."""
    p = _pad101(t)
    r = p[..., :-2] + p[..., 1:-1]
    r += p[..., 2:]
    s = r[..., :-2, :] + r[..., 1:-1, :]
    s += r[..., 2:, :]
    return s


def _box3(t: torch.Tensor) -> torch.Tensor:
    """cv2.blur(t, (3, 3)) of a float32 (B, 1, H, W): OpenCV sums the window in double and
    scales by 1/9 in double before rounding to float32 (bit for bit the same here)."""
    return (_box_sum3(t.to(torch.float64)) * (1.0 / 9)).to(torch.float32)


def _equalize(d: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist on uint8-valued (B, 1, H, W): lut[v] = round((cdf[v] - cdf[vmin])
    * (255 / (N - hist[vmin]))) in float32; an image of one value is left as it is."""
    B = d.shape[0]
    # one histogram of 256 B bins: image b's values offset by 256 b
    v = d.reshape(B, -1).to(torch.int32).clamp_(0, 255)
    v += torch.arange(0, 256 * B, 256, device=d.device, dtype=torch.int32).unsqueeze(1)
    hist = torch.bincount(v.view(-1), minlength=256 * B).view(B, 256).to(torch.float32)
    cdf = hist.cumsum(1)
    cmin = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    total = cdf[:, -1:]
    scale = torch.full_like(total, 255.0) / (total - cmin).clamp_min(1)
    lut = ((cdf - cmin) * scale).round_().clamp_(0, 255)
    lut = torch.where(total > cmin, lut, torch.arange(256, device=d.device, dtype=lut.dtype).expand_as(lut))
    return lut.view(-1)[v].view(d.shape).to(d.dtype)


def _relief(d: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D(d, cv2.CV_8U, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]) of uint8-valued
    float (B, 1, H, W): integer sums (exact), reflect-101 borders, saturated to [0, 255]."""
    p = _pad101(d)
    H, W = d.shape[-2:]
    out = p[..., 2:, 2:] - p[..., :H, :W]
    out *= 2
    out += p[..., 1:H + 1, 2:]
    out -= p[..., 1:H + 1, :W]
    out += p[..., 2:, 1:W + 1]
    out -= p[..., :H, 1:W + 1]
    out += d
    return out.clamp_(0, 255)


def _dilate3(e: torch.Tensor) -> torch.Tensor:
    """3 x 3 binary dilation of a bool (B, 1, H, W), nothing outside the image."""
    p = F.pad(e, (1, 1, 1, 1))
    r = p[..., :-2] | p[..., 1:-1]
    r |= p[..., 2:]
    s = r[..., :-2, :] | r[..., 1:-1, :]
    s |= r[..., 2:, :]
    return s


#: OpenCV Canny's fixed-point tan(22.5 deg) (CANNY_SHIFT = 15)
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)


def canny(u: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """cv2.Canny(u, low, high) (aperture 3, L1 gradient) on uint8-valued (B, 1, H, W):
    Sobel with replicated borders, |dx| + |dy|, OpenCV's non-maximum suppression (its
    fixed-point direction sectors and its strict / non-strict neighbour comparisons), then
    hysteresis: candidates above ``low`` that are 8-connected, through candidates, to one
    above ``high``.  Returns a bool edge map.  Integer arithmetic below 2^24 throughout, so
    exact in float32 (the sector tests compare multiples of powers of two)."""
    t = u.to(torch.float32)
    H, W = t.shape[-2:]
    p = F.pad(t, (1, 1, 1, 1), mode="replicate")
    hd = p[..., 2:] - p[..., :-2]  # (H + 2, W): the separable Sobel, [1 2 1] x [-1 0 1]
    dx = hd[..., :-2, :] + hd[..., 2:, :]
    dx.add_(hd[..., 1:-1, :], alpha=2)
    vd = p[..., 2:, :] - p[..., :-2, :]
    dy = vd[..., :-2] + vd[..., 2:]
    dy.add_(vd[..., 1:-1], alpha=2)
    ax, ay = dx.abs(), dy.abs()
    m = ax + ay
    mp = F.pad(m, (1, 1, 1, 1))

    def nb(oy, ox):
        return mp[..., 1 + oy:1 + oy + H, 1 + ox:1 + ox + W]

    tg22 = ax * float(_TG22)
    horiz = ay * 32768.0 < tg22  # (ay << 15) < tg22
    vert = (ay - 2 * ax).mul_(32768.0) > tg22  # (ay << 15) > tg22 + (ax << 16)
    keep_h = (m > nb(0, -1)) & (m >= nb(0, 1))
    keep_v = (m > nb(-1, 0)) & (m >= nb(1, 0))
    opposite = (dx < 0) ^ (dy < 0)
    dmax = torch.where(opposite, torch.maximum(nb(-1, 1), nb(1, -1)), torch.maximum(nb(-1, -1), nb(1, 1)))
    keep = torch.where(horiz, keep_h, torch.where(vert, keep_v, m > dmax))
    cand = keep & (m > int(math.floor(low)))
    edge = cand & (m > int(math.floor(high)))
    if torch.equal(edge, cand):  # every candidate is strong: nothing to grow
        return edge
    while True:  # hysteresis: grow the strong edges through the candidates, 4 rounds at a time
        for _ in range(4):
            edge = _dilate3(edge) & cand
        grown = _dilate3(edge) & cand
        if torch.equal(grown, edge):
            return edge
        edge = grown


#: cv2.distanceTransform(DIST_L2, 5)'s float32 steps: straight 1, diagonal 1.4, knight 2.1969
_CHAMFER = (1.0, float(np.float32(1.4)), float(np.float32(2.1969)))


def _chamfer_forward(d: torch.Tensor, rounds: int, big: float) -> torch.Tensor:
    """The fixed point of OpenCV's forward raster pass (each pixel: min of itself and its
    eight forward neighbours (row above / two above / left) plus their step, in float32),
    by Jacobi rounds over the whole image: the pass's dependencies form a DAG, so the fixed
    point is its result; a value below the cap needs at most ``rounds`` steps."""
    a, b, c = _CHAMFER
    H, W = d.shape[-2:]
    P = torch.full((*d.shape[:-2], H + 2, W + 4), big, dtype=d.dtype, device=d.device)
    inner = P[..., 2:, 2:W + 2]
    inner.copy_(d)
    up2, up1, row = P[..., 0:H, :], P[..., 1:H + 1, :], P[..., 2:H + 2, :]
    for it in range(rounds):
        knight = torch.minimum(up2[..., 1:W + 1], up2[..., 3:W + 3])
        torch.minimum(knight, up1[..., 0:W], out=knight)
        torch.minimum(knight, up1[..., 4:W + 4], out=knight)
        knight += c
        diag = torch.minimum(up1[..., 1:W + 1], up1[..., 3:W + 3])
        diag += b
        straight = torch.minimum(up1[..., 2:W + 2], row[..., 1:W + 1])
        straight += a
        torch.minimum(knight, diag, out=knight)
        torch.minimum(knight, straight, out=knight)
        new = torch.minimum(inner, knight)
        if (it % 4 == 3 or it == rounds - 1) and torch.equal(new, inner):
            break
        inner.copy_(new)
    return inner


def chamfer_distance(sources: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """cv2.distanceTransform(src, DIST_L2, 5) of a (B, 1, H, W) bool map of the zero pixels
    (``sources``), capped at ``cap`` (what cv2.threshold(TRUNC) keeps), bit for bit: OpenCV
    runs a forward and a backward raster pass, summing the 5 x 5 chamfer mask's float32
    steps from the source; each pass is computed here as its fixed point (the backward pass
    is the forward one on the image turned by 180 degrees).  Any device."""
    big = float(2 * cap + 8)  # "no source within reach": above the cap even after a step
    d = torch.where(sources, torch.zeros((), dtype=torch.float32, device=sources.device),
                    torch.full((), big, dtype=torch.float32, device=sources.device))
    rounds = int(math.ceil(cap)) + 1  # every step is >= 1: a path below the cap is shorter
    d = _chamfer_forward(d, rounds, big)
    d = _chamfer_forward(d.flip(-2, -1), rounds, big).flip(-2, -1)
    return d.clamp(max=cap)


def _chamfer_distance_cv2(sources: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """chamfer_distance on the CPU with OpenCV itself, the batch in ONE call: the images are
    stacked with ``ceil(cap) + 1`` rows of non-sources between them, so a path from one image
    to another costs more than the cap (and a path that leaves its image and comes back is
    longer than one that stays: the capped distances are the per-image ones)."""
    import cv2

    B, _, H, W = sources.shape
    gap = int(math.ceil(cap)) + 1
    tiled = torch.full((B, H + gap, W), 255, dtype=torch.uint8)
    tiled[:, :H].masked_fill_(sources[:, 0], 0)
    d = cv2.distanceTransform(tiled.view(B * (H + gap), W).numpy(), cv2.DIST_L2, 5)
    return torch.from_numpy(d).view(B, H + gap, W)[:, None, :H].clamp(max=cap)


#: On the CPU, Canny and the distance transform run in OpenCV itself (the reference's own
#: functions: the same bits, several times faster than the tensor versions there); other
#: devices use the tensor versions above, which give the same bits (tests check both).
_OPENCV_ON_CPU = True


def _canny_cv2(u: torch.Tensor) -> torch.Tensor:
    """canny() on the CPU with cv2.Canny, one call per image; ``u`` uint8-valued (B, 1, H, W)."""
    import cv2

    u8 = u[:, 0].to(torch.uint8).numpy()
    out = np.empty_like(u8)
    for b in range(u8.shape[0]):
        cv2.Canny(u8[b], 50, 150, edges=out[b])
    return torch.from_numpy(out).unsqueeze(1) != 0


def _water_distance(lq8: torch.Tensor) -> torch.Tensor:
    """The water spatter's 8-bit relief of the liquid layer (uint8-valued float32): OpenCV's
    Canny edges, their distance transform capped at 20, cv2.blur (truncated to 8 bits),
    equalizeHist, the relief kernel, cv2.blur (8 bits, rounded)."""
    if lq8.device.type == "cpu" and _OPENCV_ON_CPU:
        d = _chamfer_distance_cv2(_canny_cv2(lq8))
    else:
        d = chamfer_distance(canny(lq8))
    dist = torch.floor_(_box3(d))
    dist = _relief(_equalize(dist))
    return _box_sum3(dist).mul_(1.0 / 9).round_()


def spatter(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    loc, scale, sigma, thr, intensity, mud = table_params(table, "spatter", severity)
    B, C, H, W = x.shape
    # float64 when the draws are NumPy's (replayed): the reference's uint8 truncation of
    # the liquid layer is then the same
    ldt = torch.float64 if getattr(draws, "dtype", torch.float32) == torch.float64 else torch.float32
    liquid = draws.normal((B, H, W), loc, scale).to(ldt).unsqueeze(1)
    liquid = _gaussian(liquid, sigma)
    if mud:
        color = [63 / 255.0, 42 / 255.0, 20 / 255.0]
        if ldt == torch.float64:  # replayed: the reference's float32 mask (scipy rounds each
            # pass to float32), x *= 1 - m in float32, the colour added in float64
            m = _gaussian((liquid > thr).to(torch.float64), intensity, between=torch.float32)
            m = m.to(torch.float32).to(torch.float64)
            m = m.masked_fill_(m < 0.8, 0)
            y = (x.to(torch.float32) * (1 - m.to(torch.float32))).to(torch.float64)
            y += torch.tensor(color, dtype=torch.float64, device=x.device).view(1, 3, 1, 1) * m
            return y.clamp_(0, 1).to(x.dtype)
        m = _gaussian((liquid > thr).to(x.dtype), intensity)
        m = m.masked_fill_(m < 0.8, 0)
        return (x * (1 - m)).addcmul_(m, x.new_tensor(color).view(1, 3, 1, 1)).clamp_(0, 1)
    # water: the 8-bit liquid layer (exact integers from here on, float32); the reference's
    # astype(uint8) wraps a layer above 1 around (261.6 -> 5), so does this
    lq8 = torch.floor(liquid.masked_fill_(liquid < thr, 0) * 255).remainder_(256).to(torch.float32)
    m = lq8 * _water_distance(lq8)
    mx = m.amax(dim=(2, 3), keepdim=True)
    # the reference's float32 arithmetic, operation by operation
    m = torch.where(mx > 0, m / mx.clamp_min(1), torch.zeros_like(m)) * float(np.float32(intensity))
    color = torch.tensor([175 / 255.0, 238 / 255.0, 238 / 255.0], dtype=torch.float32, device=x.device)
    y = (m * color.view(1, 3, 1, 1)).to(x.dtype)  # float32 product, then x + it in x's dtype
    return y.add_(x).clamp_(0, 1)


FUNCTIONS = {"snow": snow, "frost": frost, "fog": fog, "spatter": spatter}
