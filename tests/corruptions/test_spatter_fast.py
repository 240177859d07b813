"""Water spatter's building blocks (torch_weather) against OpenCV and independent loops.

The distance transform is checked bit for bit: OpenCV's two raster passes written out
pixel by pixel in float32 (the independent reference), cv2.distanceTransform itself, the
torch fixed-point version (the path of non-CPU devices) and the CPU path (one OpenCV call on
the images stacked with gaps), all capped at 20.  Canny, the 8-bit steps and the whole
water spatter with the reference's draws replayed are compared with OpenCV / the reference.
"""
import numpy as np
import pytest
import torch

import atom_plugin  # noqa: F401
from atom_plugin.corruptions import torch_weather as tw
from atom_plugin.corruptions.draws import NumpyDraws
from atom_plugin.corruptions.torch_backend import corrupt_torch

cv2 = pytest.importorskip("cv2")


def _two_pass_loops(src: np.ndarray) -> np.ndarray:
    """OpenCV's 5x5 chamfer distance (DIST_L2): forward then backward raster pass, float32
    sums of the steps 1, 1.4, 2.1969, pixel by pixel; ``src`` True at the zero pixels."""
    a, b, c = np.float32(1.0), np.float32(1.4), np.float32(2.1969)
    big = np.float32(1e6)
    H, W = src.shape
    t = np.full((H + 4, W + 4), big, np.float32)
    fwd = ((-2, -1, c), (-2, 1, c), (-1, -2, c), (-1, -1, b), (-1, 0, a), (-1, 1, b), (-1, 2, c), (0, -1, a))
    for i in range(H):
        for j in range(W):
            if src[i, j]:
                t[i + 2, j + 2] = 0
            else:
                t[i + 2, j + 2] = min(np.float32(t[i + 2 + di, j + 2 + dj] + w) for di, dj, w in fwd)
    for i in range(H - 1, -1, -1):
        for j in range(W - 1, -1, -1):
            cands = [np.float32(t[i + 2 - di, j + 2 - dj] + w) for di, dj, w in fwd]
            t[i + 2, j + 2] = min([t[i + 2, j + 2]] + cands)
    return t[2:-2, 2:-2]


def _random_sources(rng, B, H, W, density):
    return torch.from_numpy(rng.random((B, 1, H, W)) < density)


def test_chamfer_distance_equals_raster_loops_and_opencv():
    rng = np.random.default_rng(0)
    for k, (H, W, density) in enumerate([(7, 9, 0.05), (18, 13, 0.02), (24, 26, 0.005), (5, 30, 0.1),
                                         (30, 6, 0.03), (16, 16, 0.0)]):
        src = _random_sources(rng, 2, H, W, density)
        if k == 0:
            src[0, 0, 3, 4] = True  # a lone source: every step type, up to the cap
        loops = np.stack([_two_pass_loops(s[0]) for s in src.numpy()])[:, None]
        ocv = np.stack([cv2.distanceTransform(np.where(s[0], 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
                        for s in src.numpy()])[:, None]
        np.testing.assert_array_equal(np.minimum(ocv, 20), np.minimum(loops, 20))
        for cap in (20.0, 3.5):
            want = np.minimum(loops, np.float32(cap))
            np.testing.assert_array_equal(tw.chamfer_distance(src, cap=cap).numpy(), want)
            np.testing.assert_array_equal(tw._chamfer_distance_cv2(src, cap=cap).numpy(), want)


def test_chamfer_cpu_path_stacks_images_like_one_call_each():
    """The stacked OpenCV call equals one call per image (capped), on larger maps where
    sources sit on the borders between stacked images."""
    rng = np.random.default_rng(1)
    src = _random_sources(rng, 5, 41, 37, 0.01)
    src[1, 0, -1, :] = True  # last row of one image, first row of the next
    src[2, 0, 0, ::3] = True
    src[3] = False  # an image without sources
    per_image = np.stack([cv2.distanceTransform(np.where(s[0], 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
                          for s in src.numpy()])[:, None]
    np.testing.assert_array_equal(tw._chamfer_distance_cv2(src).numpy(), np.minimum(per_image, 20))
    np.testing.assert_array_equal(tw.chamfer_distance(src).numpy(), np.minimum(per_image, 20))


def _liquid_like(rng, B, H, W, thr=0.68):
    from scipy.ndimage import gaussian_filter

    out = []
    for _ in range(B):
        lq = gaussian_filter(rng.normal(0.65, 0.3, (H, W)), 2, mode="nearest")
        lq[lq < thr] = 0
        out.append((lq * 255).astype(np.uint8))
    return np.stack(out)


def test_canny_matches_opencv():
    rng = np.random.default_rng(2)
    u8 = np.concatenate([_liquid_like(rng, 4, 40, 33), rng.integers(0, 256, (2, 40, 33)).astype(np.uint8),
                         (rng.random((2, 40, 33)) < 0.5).astype(np.uint8) * 120])
    ref = np.stack([cv2.Canny(u, 50, 150) > 0 for u in u8])
    u = torch.from_numpy(u8).float()[:, None]
    np.testing.assert_array_equal(tw.canny(u)[:, 0].numpy(), ref)
    np.testing.assert_array_equal(tw._canny_cv2(u)[:, 0].numpy(), ref)


def test_eight_bit_steps_match_opencv():
    rng = np.random.default_rng(3)
    src = _random_sources(rng, 3, 29, 35, 0.03)
    d = tw._chamfer_distance_cv2(src)
    ref_blur = np.stack([cv2.blur(v[0], (3, 3)) for v in d.numpy()])
    np.testing.assert_array_equal(tw._box3(d)[:, 0].numpy(), ref_blur)
    d8 = ref_blur.astype(np.uint8)
    eq = np.stack([cv2.equalizeHist(v) for v in d8])
    np.testing.assert_array_equal(tw._equalize(torch.from_numpy(d8).float()[:, None])[:, 0].numpy(), eq)
    u8 = rng.integers(0, 256, (3, 29, 35)).astype(np.uint8)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    rel = np.stack([cv2.filter2D(v, cv2.CV_8U, ker) for v in u8])
    np.testing.assert_array_equal(tw._relief(torch.from_numpy(u8).float()[:, None])[:, 0].numpy(), rel)
    blur8 = np.stack([cv2.blur(v, (3, 3)) for v in u8])
    got = tw._box_sum3(torch.from_numpy(u8).float()[:, None]).mul_(1.0 / 9).round_()[:, 0].numpy()
    np.testing.assert_array_equal(got, blur8)


def _reference_water(u8, severity, seed):
    import imagecorruptions

    np.random.seed(seed)
    return imagecorruptions.corrupt(u8, corruption_name="spatter", severity=severity)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_water_spatter_bit_exact_with_replayed_draws(severity, monkeypatch):
    """With the reference's normal draws replayed, the output quantized like the reference
    (float32 x 255, truncated) is the reference's uint8 image, pixel for pixel; also with
    the tensor Canny and distance transform forced (the path of other devices)."""
    rng = np.random.default_rng(10 + severity)
    cases = [(severity, 48, 51), (40 + severity, 37, 40)]
    if severity == 3:
        cases.append((101, 100, 100))  # a liquid layer above 1: astype(uint8) wraps it around
    for seed, h, w in cases:
        u8 = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        ref = _reference_water(u8, severity, seed)
        x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
        outs = []
        for force_torch in (False, True):
            if force_torch:
                monkeypatch.setattr(tw, "_OPENCV_ON_CPU", False)
            np.random.seed(seed)
            y = corrupt_torch(x, "spatter", severity, draws=NumpyDraws(), table="imagenet")
            q = (y[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()  # float32 product, truncated
            np.testing.assert_array_equal(q, ref)
            outs.append(y)
        monkeypatch.undo()
        assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("sigma", [1, 1.5, 4])
def test_gaussian_matches_scipy(sigma):
    """float64: scipy's arithmetic bit for bit (also a float32 image's mask, rounded to
    float32 between the passes); float32: the shifted views (large images) and the dense
    product (small) within float32 rounding."""
    from scipy.ndimage import gaussian_filter as scipy_gaussian

    rng = np.random.default_rng(4)
    for H, W in ((200, 213), (31, 40)):
        x = rng.normal(0.6, 0.3, (2, 1, H, W))
        want = np.stack([scipy_gaussian(v[0], sigma, mode="nearest", truncate=4.0) for v in x])[:, None]
        np.testing.assert_array_equal(tw._gaussian(torch.from_numpy(x), sigma).numpy(), want)
        got32 = tw._gaussian(torch.from_numpy(x).float(), sigma).numpy()
        np.testing.assert_allclose(got32, want, rtol=0, atol=2e-6)
        m = (x > 0.6).astype(np.float32)
        want_m = np.stack([scipy_gaussian(v[0], sigma, mode="nearest", truncate=4.0) for v in m])[:, None]
        got_m = tw._gaussian(torch.from_numpy(m).double(), sigma, between=torch.float32).float().numpy()
        np.testing.assert_array_equal(got_m, want_m)


@pytest.mark.parametrize("severity", [4, 5])
def test_mud_spatter_exact_with_replayed_draws_in_float64(severity):
    """Mud (severities 4, 5) with the reference's draws replayed, on a float64 image (the
    reference adds the colour in float64): truncated to 8 bits it is the reference's image
    (the mask is float32 rounded after each Gaussian pass, like scipy's)."""
    rng = np.random.default_rng(20 + severity)
    for seed in range(12):  # at 96 px about one draw in four has a mask value near 0.8
        u8 = rng.integers(0, 256, (96, 101, 3)).astype(np.uint8)
        ref = _reference_water(u8, severity, seed)
        x = (torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255).double()
        np.random.seed(seed)
        y = tw.spatter(x, severity, NumpyDraws(), "imagenet")
        assert y.dtype == torch.float64
        np.testing.assert_array_equal(np.trunc(y[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), ref)
