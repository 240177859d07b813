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

import numpy as np
import torch
import torch.nn.functional as F

from ._common import gaussian_filter, pad2d, to_gray
from .draws import TorchDraws
from .torch_blur import motion_blur_layer, zoom_matrix

SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
           (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))


# -- snow ------------------------------------------------------------------------------
def snow(x: torch.Tensor, severity: int, draws: TorchDraws) -> torch.Tensor:
    loc, scale, zoom, thr, radius, sigma, blend = SNOW[severity - 1]
    B, C, H, W = x.shape
    layer = draws.normal((B, H, W), loc, scale).to(x.dtype)
    Ah = torch.from_numpy(zoom_matrix(H, float(zoom), False)).to(x.dtype).to(x.device)
    Aw = torch.from_numpy(zoom_matrix(W, float(zoom), False)).to(x.dtype).to(x.device)
    layer = torch.einsum("ph,bhw,qw->bpq", Ah, layer, Aw)  # may be larger than H x W
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp_(0, 1)
    angle = draws.uniform((B,), -135.0, -45.0)
    layer = motion_blur_layer(layer.unsqueeze(1), radius, sigma, angle)
    layer = torch.round(layer * 255) / 255
    layer = layer[:, :, :H, :W]
    y = blend * x + (1 - blend) * torch.maximum(x, to_gray(x) * 1.5 + 0.5)
    return (y + layer + layer.flip(-1, -2)).clamp_(0, 1)


# -- frost -----------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _frost_textures_cpu(H: int, W: int):
    """The six rescaled frost textures (RGB uint8) for images of size H x W."""
    import importlib.resources

    import cv2

    textures = []
    root = importlib.resources.files("imagecorruptions")
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"):
        with importlib.resources.as_file(root / "frost" / name) as path:
            img = cv2.imread(str(path))
        fh, fw = img.shape[:2]
        if fh >= H and fw >= W:
            s = 1
        elif fh < H and fw >= W:
            s = H / fh
        elif fh >= H and fw < W:
            s = W / fw
        else:
            s = max(H / fh, W / fw)
        s *= 1.1
        img = cv2.resize(img, dsize=(int(np.ceil(fw * s)), int(np.ceil(fh * s))), interpolation=cv2.INTER_CUBIC)
        textures.append(np.ascontiguousarray(img[..., ::-1]))
    hm = max(t.shape[0] for t in textures)
    wm = max(t.shape[1] for t in textures)
    stack = np.zeros((len(textures), hm, wm, 3), dtype=np.uint8)
    for i, t in enumerate(textures):
        stack[i, : t.shape[0], : t.shape[1]] = t
    sizes = np.array([t.shape[:2] for t in textures], dtype=np.int64)
    return torch.from_numpy(stack), torch.from_numpy(sizes)


_FROST_DEVICE_CACHE: dict = {}


def frost_textures(H: int, W: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (H, W, str(device))
    if key not in _FROST_DEVICE_CACHE:
        stack, sizes = _frost_textures_cpu(H, W)
        _FROST_DEVICE_CACHE[key] = (stack.to(device), sizes.to(device))
    return _FROST_DEVICE_CACHE[key]


def frost(x: torch.Tensor, severity: int, draws: TorchDraws) -> torch.Tensor:
    a, b = FROST[severity - 1]
    B, C, H, W = x.shape
    stack, sizes = frost_textures(H, W, x.device)
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


def fog(x: torch.Tensor, severity: int, draws: TorchDraws, plasma: torch.Tensor | None = None) -> torch.Tensor:
    """``plasma`` (B, >=H, >=W) in [0, 1] replaces the random heightmap when given."""
    a, decay = FOG[severity - 1]
    B, C, H, W = x.shape
    if plasma is None:
        side = max(H, W, C)
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
    """cv2.equalizeHist on uint8-valued (B, 1, H, W)."""
    B = d.shape[0]
    v = d.reshape(B, -1).long().clamp_(0, 255)
    hist = torch.zeros(B, 256, device=d.device, dtype=torch.float32).scatter_add_(
        1, v, torch.ones_like(v, dtype=torch.float32))
    cdf = hist.cumsum(1)
    cmin = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    total = cdf[:, -1:]
    lut = torch.where(total > cmin, ((cdf - cmin) * 255.0 / (total - cmin).clamp_min(1)).round(), torch.zeros_like(cdf))
    return lut.clamp_(0, 255).gather(1, v).reshape(d.shape).to(d.dtype)


def spatter(x: torch.Tensor, severity: int, draws: TorchDraws) -> torch.Tensor:
    loc, scale, sigma, thr, intensity, mud = SPATTER[severity - 1]
    B, C, H, W = x.shape
    liquid = draws.normal((B, H, W), loc, scale).to(torch.float32).unsqueeze(1)
    liquid = gaussian_filter(liquid, sigma)
    liquid = torch.where(liquid < thr, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_filter((liquid > thr).to(x.dtype), intensity)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = x.new_tensor([63 / 255.0, 42 / 255.0, 20 / 255.0]).view(1, 3, 1, 1)
        return (x * (1 - m) + color * m).clamp_(0, 1)
    # water: distance (chessboard, capped at 20) to the liquid region's boundary stands in
    # for the reference's distance transform of its Canny edges.
    lq8 = torch.floor(liquid * 255)
    region = (lq8 > 0).to(x.dtype)
    eroded = -F.max_pool2d(-F.pad(region, (1, 1, 1, 1), value=1.0), 3, stride=1)
    edge = (region - eroded).clamp_(0, 1)
    dist = torch.where(edge > 0, torch.zeros_like(edge), torch.full_like(edge, 20.0))
    reach = edge
    for k in range(1, 20):
        reach = F.max_pool2d(reach, 3, stride=1, padding=1)
        dist = torch.minimum(dist, torch.where(reach > 0, torch.full_like(dist, float(k)), dist))
    dist = torch.floor(_box3(dist))
    dist = _equalize(dist)
    ker = x.new_tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]).view(1, 1, 3, 3)
    dist = F.conv2d(pad2d(dist, 1, "mirror"), ker).round().clamp_(0, 255)
    dist = _box3(dist)
    m = lq8 * dist
    mx = m.amax(dim=(2, 3), keepdim=True)
    m = torch.where(mx > 0, m / mx.clamp_min(1e-12), torch.zeros_like(m)) * intensity
    color = x.new_tensor([175 / 255.0, 238 / 255.0, 238 / 255.0]).view(1, 3, 1, 1)
    return (x + (m * color).clamp(0, 1)).clamp_(0, 1)


FUNCTIONS = {"snow": snow, "frost": frost, "fog": fog, "spatter": spatter}
