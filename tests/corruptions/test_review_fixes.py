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


def test_jpeg_quantizer_tables_not_kept_per_image_size():
    """The plane-sized quantization tables were cached per (quality, image size), 128 entries
    in each of two caches (~0.75 GB held forever for ~500 px images of varied sizes)."""
    from atom_plugin.corruptions import torch_jpeg as J

    J._quantizer.cache_clear()
    J._quantizer_fm.cache_clear()
    for k in range(24):
        x = torch.rand(1, 3, 16 + 8 * k, 24)
        for s in (1, 5):
            J.jpeg_compression(x, s)
    J._JPEG_CACHE.clear()
    assert J._quantizer.cache_info().currsize == 0
    assert J._quantizer_fm.cache_info().currsize <= 16
