"""The fast paths of the blur corruptions (torch backend) against their direct forms:
motion blur's row-gather path against the per-tap gathers / shifted views."""
from __future__ import annotations

import pytest
import torch

from atom_plugin.corruptions import torch_blur as tb


@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (4, 1, 33, 35), (3, 3, 20, 48), (2, 3, 11, 11), (2, 1, 3, 5)])
@pytest.mark.parametrize("angles", [(-45.0, 45.0), (-135.0, -45.0)])
@pytest.mark.parametrize("radius,sigma,early_stop", [(10, 3.0, True), (20, 15.0, True), (15, 8.0, False)])
def test_motion_rows_path_equals_per_tap_gathers(shape, angles, radius, sigma, early_stop):
    g = torch.Generator().manual_seed(sum(shape) + radius)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(shape, generator=g, dtype=dtype)
        lo, hi = angles
        a = torch.rand(shape[0], generator=g, dtype=torch.float64) * (hi - lo) + lo
        ref = tb._motion_blur_chunk(x, radius, sigma, a, early_stop)  # per-tap gathers / views
        got = tb.motion_blur_layer(x, radius, sigma, a, early_stop)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        H, W = shape[-2:]
        crop = tb.motion_blur_layer(x, radius, sigma, a, early_stop, out_size=(H - 1, W - 2))
        torch.testing.assert_close(crop, ref[..., :H - 1, :W - 2], atol=1e-6, rtol=0)


def test_motion_rows_path_in_bands(monkeypatch):
    """Large images (or a small byte budget) take the rows in bands: same result."""
    monkeypatch.setattr(tb, "MOTION_ROWS_BYTES", 5000)
    monkeypatch.setattr(tb, "MOTION_ROWS_PIXELS", 10**6)
    g = torch.Generator().manual_seed(0)
    for H, W in ((32, 32), (37, 30), (100, 90)):
        x = torch.rand(3, 3, H, W, generator=g)
        a = torch.rand(3, generator=g, dtype=torch.float64) * 90 - 45
        for radius, sigma, es in ((10, 3.0, True), (15, 8.0, False)):
            ref = tb._motion_blur_chunk(x, radius, sigma, a, es)
            torch.testing.assert_close(tb.motion_blur_layer(x, radius, sigma, a, es), ref, atol=1e-6, rtol=0)


def _sequential_sweep(H, W, delta, d):
    """The reference's sweep on an index image, literally (a copy, see torch_blur._sweep)."""
    arr = torch.arange(H * W).view(H, W).clone()
    k = 0
    for h in range(H - delta, delta, -1):
        for w in range(W - delta, delta, -1):
            dx, dy = int(d[k, 0]), int(d[k, 1])
            arr[h, w] = arr[h + dy, w + dx]
            k += 1
    return arr.view(-1)


@pytest.mark.parametrize("H,W", [(32, 32), (20, 27), (9, 9)])
@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_glass_sources_match_the_sequential_sweep(H, W, delta):
    sw = tb._sweep(H, W, delta)
    if sw is None:
        return
    g = torch.Generator().manual_seed(H * 10 + delta)
    d = torch.randint(-delta, delta, (3, sw[0].numel(), 2), generator=g)
    src = tb.glass_shuffle_sources(H, W, delta, d)
    for b in range(3):
        assert torch.equal(src[b], _sequential_sweep(H, W, delta, d[b]))


def test_glass_blur_chunks_give_the_same_result(monkeypatch):
    from atom_plugin.corruptions.draws import TorchDraws

    x = (torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    whole = [tb.glass_blur(x, s, TorchDraws(torch.Generator().manual_seed(s), "cpu")) for s in (1, 5)]
    monkeypatch.setattr(tb, "GLASS_CHUNK_BYTES", 1)  # one image per chunk
    for s, w in zip((1, 5), whole):
        torch.testing.assert_close(tb.glass_blur(x, s, TorchDraws(torch.Generator().manual_seed(s), "cpu")), w,
                                   atol=0, rtol=0)


@pytest.mark.parametrize("size", [(64, 64), (70, 90), (100, 100), (116, 116)])
def test_defocus_fft_path_equals_separable_path(monkeypatch, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    fft = [tb.defocus_blur(x, s) for s in (1, 3, 5)]
    monkeypatch.setattr(tb, "DEFOCUS_FFT_PIXELS", 10**9)
    for s, f in zip((1, 3, 5), fft):
        torch.testing.assert_close(f, tb.defocus_blur(x, s), atol=2e-6, rtol=0)


def test_fft_size():
    from atom_plugin.corruptions._common import fft_size

    for n in range(1, 400):
        m = fft_size(n)
        assert m >= n and m % 4 == 0 and m < n + 4 + n // 4
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        assert k == 1
        assert all(fft_size(j) == m for j in range(n, m + 1))  # smallest such length


@pytest.mark.parametrize("severity", [1, 5])
def test_defocus_fft_path_matches_reference(severity):
    """At 100 px (FFT path, padded to a fast length) against imagecorruptions (cv2)."""
    ic = pytest.importorskip("imagecorruptions")
    import numpy as np

    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(100, 100), mode="bilinear")
    x = (x * 255).round() / 255
    u8 = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    ref = ic.corrupt(u8, severity=severity, corruption_name="defocus_blur").astype(np.float64) / 255
    out = tb.defocus_blur(x, severity)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(out - ref).max() * 255 <= 1.0 + 1e-3
    assert (np.floor(out * 255 + 1e-6) == np.round(ref * 255)).mean() >= 0.95


def test_defocus_separable_chunks_give_the_same_result(monkeypatch):
    x = torch.rand(7, 3, 32, 40, generator=torch.Generator().manual_seed(5))
    whole = [tb.defocus_blur(x, s) for s in (1, 5)]
    monkeypatch.setattr(tb, "DEFOCUS_MM_CHUNK_BYTES", 1)  # one image per chunk
    for s, w in zip((1, 5), whole):
        torch.testing.assert_close(tb.defocus_blur(x, s), w, atol=1e-6, rtol=0)
