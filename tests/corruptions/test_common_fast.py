"""Shared filters of the torch corruption backend against scipy.ndimage (blocked paths)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atom_plugin.corruptions import _common

ndimage = pytest.importorskip("scipy.ndimage")


@pytest.mark.parametrize("shape", [(32, 32), (33, 70), (100, 41), (224, 224), (5, 37)])
@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize("sigma", [0.7, 1.5, 6.0, 12.0])
def test_gaussian_filter_matches_scipy(shape, mode, sigma):
    g = np.random.default_rng(sum(shape))
    x = g.random((2, *shape))
    ref = ndimage.gaussian_filter(x, (0, sigma, sigma), mode=mode, truncate=4.0)
    out = _common.gaussian_filter(torch.from_numpy(x), sigma, mode=mode)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12, rtol=0)
    out32 = _common.gaussian_filter(torch.from_numpy(x).float(), sigma, mode=mode)
    np.testing.assert_allclose(out32.double().numpy(), ref, atol=2e-6, rtol=0)


def test_blocks_equal_whole_products(monkeypatch):
    x = torch.rand(3, 2, 97, 150, dtype=torch.float64)
    k = (0.1, 0.2, 0.4, 0.2, 0.1)
    blocked = _common.separable_filter(x, k, mode="reflect")
    monkeypatch.setattr(_common, "SEP_BLOCK", 10**6)
    torch.testing.assert_close(blocked, _common.separable_filter(x, k, mode="reflect"), atol=1e-14, rtol=0)
