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
