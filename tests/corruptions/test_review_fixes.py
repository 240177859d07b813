"""Regression tests for defects found in the review of the corruption speed-ups."""
import atom_plugin  # noqa: F401  (before cv2 / imagecorruptions)
import numpy as np
import pytest
import torch

from atom_plugin.corruptions.torch_backend import corrupt_torch


@pytest.mark.parametrize("shape,severity", [((1, 3, 8, 600), 1), ((1, 3, 600, 8), 3), ((1, 3, 9, 500), 5)])
def test_defocus_fft_path_thin_images(shape, severity):
    """Thin images (a side <= the disk's radius, H W >= 64 x 64 so the FFT path) crashed in
    F.pad(mode="reflect"); the result must be cv2.filter2D's (reflect-101) as in the reference."""
    cv2 = pytest.importorskip("cv2")
    ic = pytest.importorskip("imagecorruptions.corruptions")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    out = corrupt_torch(x, "defocus_blur", severity, table="imagenet")
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    kernel = ic.disk(radius=radius, alias_blur=alias)
    img = x[0].numpy()
    ref = np.stack([cv2.filter2D(img[c], -1, kernel) for c in range(3)]).clip(0, 1)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-6)
