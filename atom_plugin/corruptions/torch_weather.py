"""Torch backend, weather family: snow, frost, fog (+ spatter, an extra corruption).

Snow, frost and fog are deterministic given their random draws (same draws, same
order as the reference: snow = normal layer + motion angle; frost = texture index + crop
corner; fog = the plasma fractal's uniforms), so they match the reference pixel by pixel
when the draws are replayed, and in distribution otherwise.  Frost uses the six frost
textures shipped with ``imagecorruptions`` (loaded and resized once per image size with
OpenCV, as the reference does, then kept on the images' device).  Spatter: the mud
variant (severity 4, 5) follows the reference exactly; the water variant (1-3) replaces
OpenCV's Canny / distance transform with a boundary-distance approximation (same
pipeline otherwise), so it matches in distribution only.
"""
from __future__ import annotations

from functools import lru_cache

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._common import gaussian_filter, pad2d, to_gray
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
    layer = motion_blur_layer(layer.unsqueeze(1), radius, sigma, angle, early_stop=imagenet)
    layer = torch.round(layer * 255) / 255
    layer = layer[:, :, :H, :W]
    y = blend * x + (1 - blend) * torch.maximum(x, to_gray(x) * 1.5 + 0.5)
    return (y + layer + layer.flip(-1, -2)).clamp_(0, 1)


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
def _box3(t: torch.Tensor) -> torch.Tensor:
    """cv2.blur(t, (3, 3)) with the default reflect-101 border; t (B, 1, H, W)."""
    return F.avg_pool2d(pad2d(t, 1, "mirror"), 3, stride=1)


def _equalize(d: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist on uint8-valued (B, 1, H, W): lut[v] = round((cdf[v] - cdf[vmin])
    * (255 / (N - hist[vmin]))) in float32; an image of one value is left as it is."""
    B = d.shape[0]
    v = d.reshape(B, -1).long().clamp_(0, 255)
    hist = torch.zeros(B, 256, device=d.device, dtype=torch.float32).scatter_add_(
        1, v, torch.ones_like(v, dtype=torch.float32))
    cdf = hist.cumsum(1)
    cmin = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    total = cdf[:, -1:]
    scale = torch.full_like(total, 255.0) / (total - cmin).clamp_min(1)
    lut = ((cdf - cmin) * scale).round().clamp_(0, 255)
    lut = torch.where(total > cmin, lut, torch.arange(256, device=d.device, dtype=lut.dtype).expand_as(lut))
    return lut.gather(1, v).reshape(d.shape).to(d.dtype)


#: OpenCV Canny's fixed-point tan(22.5 deg) (CANNY_SHIFT = 15)
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)


def canny(u: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """cv2.Canny(u, low, high) (aperture 3, L1 gradient) on uint8-valued (B, 1, H, W):
    Sobel with replicated borders, |dx| + |dy|, OpenCV's non-maximum suppression (its
    fixed-point direction sectors and its strict / non-strict neighbour comparisons), then
    hysteresis: candidates above ``low`` that are 8-connected, through candidates, to one
    above ``high``.  Returns a bool edge map."""
    t = u.to(torch.float32)  # integer arithmetic below 2^24: exact in float32
    p = F.pad(t, (1, 1, 1, 1), mode="replicate")
    kx = t.new_tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    dx = F.conv2d(p, kx)
    dy = F.conv2d(p, kx.transpose(2, 3))
    m = dx.abs() + dy.abs()
    mp = F.pad(m, (1, 1, 1, 1), value=0.0)
    H, W = m.shape[-2:]

    def nb(oy, ox):
        return mp[..., 1 + oy:1 + oy + H, 1 + ox:1 + ox + W]

    ax, ay = dx.abs().to(torch.int64), dy.abs().to(torch.int64) * (1 << 15)
    tg22 = ax * _TG22
    tg67 = tg22 + ax * (1 << 16)
    horiz = ay < tg22
    vert = ~horiz & (ay > tg67)
    opposite = (dx < 0) != (dy < 0)
    keep_h = (m > nb(0, -1)) & (m >= nb(0, 1))
    keep_v = (m > nb(-1, 0)) & (m >= nb(1, 0))
    keep_d = torch.where(opposite, (m > nb(-1, 1)) & (m > nb(1, -1)), (m > nb(-1, -1)) & (m > nb(1, 1)))
    keep = torch.where(horiz, keep_h, torch.where(vert, keep_v, keep_d))
    cand = keep & (m > int(math.floor(low)))
    edge = (cand & (m > int(math.floor(high)))).to(t.dtype)
    candf = cand.to(t.dtype)
    if torch.equal(edge, candf):  # every candidate is strong: nothing to grow
        return edge > 0
    while True:  # hysteresis: grow the strong edges through the candidates, 8 rounds at a time
        for _ in range(8):
            edge = F.max_pool2d(edge, 3, stride=1, padding=1) * candf
        if torch.equal(edge, F.max_pool2d(edge, 3, stride=1, padding=1) * candf):
            return edge > 0


#: cv2.distanceTransform(DIST_L2, 5): chamfer steps 1 (straight), 1.4 (diagonal), 2.1969 (knight)
_CHAMFER = (1.0, 1.4, 2.1969)


def chamfer_distance(sources: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """cv2.distanceTransform(src, DIST_L2, 5) of a (B, 1, H, W) bool map of the zero pixels
    (``sources``), capped at ``cap`` (what cv2.threshold(TRUNC) keeps): the shortest path
    with the 5 x 5 chamfer mask's steps, inside the image, summed in float32 from the
    source as OpenCV does.  Relaxed ``cap`` times (every step is >= 1): exact up to the cap."""
    a, b, c = _CHAMFER
    big = float(cap + 8)
    d = torch.where(sources, torch.zeros(sources.shape, dtype=torch.float32, device=sources.device),
                    torch.full(sources.shape, big, dtype=torch.float32, device=sources.device))
    H, W = d.shape[-2:]
    steps = [(0, 1, a), (1, 0, a), (0, -1, a), (-1, 0, a), (1, 1, b), (1, -1, b), (-1, 1, b), (-1, -1, b),
             (1, 2, c), (2, 1, c), (-1, 2, c), (-2, 1, c), (1, -2, c), (2, -1, c), (-1, -2, c), (-2, -1, c)]
    p = torch.full((*d.shape[:-2], H + 4, W + 4), big, dtype=d.dtype, device=d.device)
    inner = p[..., 2:2 + H, 2:2 + W]
    inner.copy_(d)
    for it in range(int(math.ceil(cap))):
        new = inner.clone()
        for oy, ox, w in steps:
            torch.minimum(new, p[..., 2 + oy:2 + oy + H, 2 + ox:2 + ox + W] + w, out=new)
        if it % 4 == 3 and torch.equal(new, inner):  # converged (checked every 4 rounds)
            break
        inner.copy_(new)
    return inner.clamp(max=cap)


def spatter(x: torch.Tensor, severity: int, draws: TorchDraws, table: str = "imagenet") -> torch.Tensor:
    loc, scale, sigma, thr, intensity, mud = table_params(table, "spatter", severity)
    B, C, H, W = x.shape
    # float64 when the draws are NumPy's (replayed): the reference's uint8 truncation of
    # the liquid layer is then the same
    ldt = torch.float64 if getattr(draws, "dtype", torch.float32) == torch.float64 else torch.float32
    liquid = draws.normal((B, H, W), loc, scale).to(ldt).unsqueeze(1)
    liquid = gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_filter((liquid > thr).to(x.dtype), intensity)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = x.new_tensor([63 / 255.0, 42 / 255.0, 20 / 255.0]).view(1, 3, 1, 1)
        return (x * (1 - m) + color * m).clamp_(0, 1)
    # water: OpenCV's Canny edges of the 8-bit layer, their chamfer distance transform
    lq8 = torch.floor(liquid * 255)
    dist = chamfer_distance(canny(lq8))
    dist = torch.floor(_box3(dist))
    dist = _equalize(dist)
    ker = dist.new_tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]).view(1, 1, 3, 3)
    dist = F.conv2d(pad2d(dist, 1, "mirror"), ker).round().clamp_(0, 255)
    dist = _box3(dist).round()  # cv2.blur of an 8-bit image is 8-bit (rounded)
    m = lq8 * dist
    mx = m.amax(dim=(2, 3), keepdim=True)
    m = torch.where(mx > 0, m / mx.clamp_min(1e-12), torch.zeros_like(m)) * intensity
    color = x.new_tensor([175 / 255.0, 238 / 255.0, 238 / 255.0]).view(1, 3, 1, 1)
    return (x + (m * color).clamp(0, 1)).clamp_(0, 1)


FUNCTIONS = {"snow": snow, "frost": frost, "fog": fog, "spatter": spatter}
