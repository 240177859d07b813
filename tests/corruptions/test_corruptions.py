"""Corruptions: API checks, torch backend vs the imagecorruptions reference.

Deterministic corruptions (and random ones given the same random draws, replayed from
NumPy in the reference's order) are compared pixel by pixel: the reference returns
``uint8(value)`` (truncation), so we require ``floor(255 * torch) == reference`` on
almost every pixel and ``|torch - reference| <= 1/255`` everywhere.  Noise corruptions,
glass blur and water spatter are also compared in distribution.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atom_plugin.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS
from atom_plugin.corruptions import corrupt as _corrupt
from atom_plugin.corruptions import get_corruption_names
from atom_plugin.corruptions.draws import GlassBlurDraws, NumpyDraws
from atom_plugin.corruptions.torch_backend import corrupt_torch as _corrupt_torch


# These tests compare with imagecorruptions, i.e. the ImageNet-C table; the default table
# ("auto") picks the CIFAR-10-C one for 32 x 32 images (tests/corruptions/test_tables.py).
def corrupt(*args, table="imagenet", **kwargs):
    return _corrupt(*args, table=table, **kwargs)


def corrupt_torch(*args, table="imagenet", **kwargs):
    return _corrupt_torch(*args, table=table, **kwargs)

ic = pytest.importorskip("imagecorruptions")

SEVERITIES = [1, 2, 3, 4, 5]


def _smooth_images(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(b, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                                        align_corners=False)
    x = 0.7 * x + 0.3 * torch.rand(b, 3, size, size, generator=g)
    return (x * 255).round() / 255  # 8-bit images: the reference sees exactly these values


@pytest.fixture(scope="module")
def img():
    return _smooth_images(1)


def _ref(x1, name, severity, np_seed=0, **kw):
    """The reference on one image (1, 3, H, W) -> (H, W, 3) float64 in [0, 1]."""
    u8 = (x1[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.random.seed(np_seed)
    return ic.corrupt(u8, severity=severity, corruption_name=name, **kw).astype(np.float64) / 255


def _agreement(out, ref, rounded=False):
    """(mean |diff| * 255, max |diff| * 255, fraction of pixels where the torch output
    quantized like the reference (uint8 truncation; PIL rounds) equals it exactly)."""
    a = out[0].permute(1, 2, 0).double().numpy()
    q = np.round(a * 255) if rounded else np.floor(a * 255 + 1e-6)
    eq = (np.abs(q - np.round(ref * 255)) < 0.5).mean()
    return np.abs(a - ref).mean() * 255, np.abs(a - ref).max() * 255, eq


# The reference computes k/255 * 255 in float64 and truncates, which loses 1 on pixels
# whose value it leaves unchanged (k/255*255 = k - 1 ulp for many k): where a
# corruption keeps many input values exactly (saturate, brightness keep the max channel),
# exact equality is lower although the formulas agree.
MIN_EQUAL = {"saturate": 0.8, "brightness": 0.9, "defocus_blur": 0.95}


EXACT = ["defocus_blur", "zoom_blur", "gaussian_blur", "contrast", "brightness", "saturate", "pixelate"]
REPLAYED = ["motion_blur", "snow", "frost", "fog", "elastic_transform"]


# -- API -------------------------------------------------------------------------------
def test_names():
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4 and len(ALL_CORRUPTIONS) == 19
    assert get_corruption_names() == list(CORRUPTIONS) == ic.get_corruption_names("common")
    assert get_corruption_names("extra") == ic.get_corruption_names("validation")
    assert get_corruption_names("blur") == ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"]
    with pytest.raises(ValueError, match="subset"):
        get_corruption_names("nope")


def test_bad_inputs(images):
    with pytest.raises(ValueError, match="gaussian_noise.*saturate"):
        corrupt(images, "gaussian_nosie", 1)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="severity"):
            corrupt(images, "fog", bad)
    with pytest.raises(TypeError, match="severity"):
        corrupt(images, "fog", 2.0)
    with pytest.raises(ValueError, match="backend"):
        corrupt(images, "fog", 1, backend="cv2")
    with pytest.raises(ValueError, match="too small.*11x11"):
        corrupt(images[:, :, :8, :8], "defocus_blur", 5)
    with pytest.raises(ValueError, match="too small.*32x32"):
        corrupt(images[:, :, :16, :16], "fog", 1, backend="imagecorruptions")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corrupt(images[:, :2], "fog", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(images * 2, "fog", 1)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_torch_contract(name):
    """Every corruption and severity: shape, dtype, device, range; changes the image;
    float64 and gray images supported; seeded reproducibility."""
    x = _smooth_images(2)
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=3)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.isnan(y).any()
        assert (y - x).abs().mean() > 1e-3, (name, s)
        assert torch.equal(y, corrupt(x, name, s, seed=3))
    y64 = corrupt(x.double(), name, 3, seed=1)
    assert y64.dtype == torch.float64
    g = corrupt(x[:, :1], name, 3, seed=1)
    assert g.shape == (2, 1, 32, 32) and float(g.min()) >= 0 and float(g.max()) <= 1


def test_generator_and_global_seed():
    x = _smooth_images(2)
    a = corrupt(x, "gaussian_noise", 3, seed=torch.Generator().manual_seed(5))
    b = corrupt(x, "gaussian_noise", 3, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, corrupt(x, "gaussian_noise", 3, seed=6))
    torch.manual_seed(0)
    c = corrupt(x, "gaussian_noise", 3)
    torch.manual_seed(0)
    assert torch.equal(c, corrupt(x, "gaussian_noise", 3))


def test_reference_backend_seeded_and_restores_numpy_state():
    x = _smooth_images(2)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = corrupt(x, "impulse_noise", 2, backend="imagecorruptions", seed=7)
    assert np.array_equal(np.random.get_state()[1], before)
    assert torch.equal(a, corrupt(x, "impulse_noise", 2, backend="imagecorruptions", seed=7))
    assert not torch.equal(a, corrupt(x, "impulse_noise", 2, backend="imagecorruptions", seed=8))
    # values are 8-bit and the batch is corrupted per image
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)
    assert a.shape == x.shape


# -- pixel agreement with the reference -----------------------------------------------
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", EXACT)
def test_deterministic_match_reference(img, name, severity):
    mae, mx, feq = _agreement(corrupt(img, name, severity), _ref(img, name, severity), rounded=name == "pixelate")
    assert mx <= 1.0 + 1e-3 and mae < 0.6, (mae, mx)
    assert feq >= MIN_EQUAL.get(name, 0.97), feq


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_sparse_operator_equals_separable_products(severity):
    """The sparse (HW, HW) operator is the reference's sum of clipped zooms, any size."""
    from atom_plugin.corruptions import torch_blur

    for x in (_smooth_images(2, size=32), _smooth_images(1, size=40, seed=3)):
        zs = torch_blur.zoom_factors(severity)
        separable = ((x + torch_blur.clipped_zoom(x, zs)) / (len(zs) + 1)).clamp(0, 1)
        torch.testing.assert_close(corrupt(x, "zoom_blur", severity), separable, atol=1e-5, rtol=0)
    mae, mx, feq = _agreement(corrupt(x, "zoom_blur", severity), _ref(x, "zoom_blur", severity))
    assert mx <= 1.0 + 1e-3 and mae < 0.6 and feq >= 0.97, (mae, mx, feq)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", REPLAYED + ["spatter", "shot_noise"])
def test_random_match_reference_given_draws(img, name, severity):
    np.random.seed(11)
    out = corrupt_torch(img, name, severity, draws=NumpyDraws())
    mae, mx, feq = _agreement(out, _ref(img, name, severity, np_seed=11))
    assert mx <= 1.0 + 1e-3 and mae < 0.6, (mae, mx)
    assert feq >= 0.95, feq


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_matches_reference_given_offsets(img, severity):
    out = corrupt_torch(img, "glass_blur", severity, draws=GlassBlurDraws(21))
    mae, mx, feq = _agreement(out, _ref(img, "glass_blur", severity, seed=21))
    assert mx <= 1.0 + 1e-3 and mae < 0.6, (mae, mx)
    assert feq >= 0.95, feq


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_close_to_pil(severity):
    x = _smooth_images(2)
    out = corrupt(x, "jpeg_compression", severity)
    ref = corrupt(x, "jpeg_compression", severity, backend="imagecorruptions")
    err = (out - ref).abs() * 255
    assert float(err.mean()) < 2.5, float(err.mean())
    assert float((err <= 1.0 + 1e-3).float().mean()) > 0.75
    # both differ from the input by a similar amount
    d_t, d_r = float((out - x).abs().mean()), float((ref - x).abs().mean())
    assert abs(d_t - d_r) < 0.25 * d_r


# -- distributions of the random corruptions -----------------------------------------
def _stats(y, x):
    d = y - x
    return np.array([float(y.mean()), float(y.std()), float(d.abs().mean()), float(d.std()),
                     float((d.abs() > 1.5 / 255).float().mean())])


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                  "glass_blur", "spatter"])
def test_random_distribution_matches_reference(name, severity):
    x = _smooth_images(6, seed=1)
    r = _stats(corrupt(x, name, severity, backend="imagecorruptions", seed=0), x)
    t = _stats(corrupt(x, name, severity, seed=0), x)
    # mean and std of the output; mean |diff|, std of diff, fraction of changed pixels
    tol = np.array([0.01, 0.01, 0.01, 0.012, 0.03])
    assert np.all(np.abs(r - t) <= tol + 0.08 * np.abs(r)), (r, t)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", REPLAYED)
def test_own_draws_distribution_matches_reference(name, severity):
    """The replayed-draw tests check the formulas; this checks the torch samplers: with
    their own random draws the outputs match the reference in distribution.  Frost picks
    one of six very different textures per image, so it needs more images."""
    x = _smooth_images(144 if name == "frost" else 32, seed=2)
    r = _stats(corrupt(x, name, severity, backend="imagecorruptions", seed=0), x)
    t = _stats(corrupt(x, name, severity, seed=0), x)
    tol = np.array([0.01, 0.01, 0.01, 0.012, 0.03])
    assert np.all(np.abs(r - t) <= tol + 0.08 * np.abs(r)), (r, t)


def test_poisson_inversion_sampler_is_poisson():
    from atom_plugin.corruptions.draws import TorchDraws
    from atom_plugin.corruptions.torch_noise import _poisson_inversion

    lam = torch.full((200_000,), 3.0)
    k = _poisson_inversion(lam, 3.0, TorchDraws(torch.Generator().manual_seed(0), "cpu"))
    assert abs(float(k.mean()) - 3.0) < 0.02 and abs(float(k.var()) - 3.0) < 0.05
    for v in range(6):  # pmf e^-3 3^v / v!
        pmf = math.exp(-3.0) * 3.0 ** v / math.factorial(v)
        assert abs(float((k == v).float().mean()) - pmf) < 0.004


def test_motion_blur_chunks_give_the_same_result(monkeypatch):
    from atom_plugin.corruptions import torch_blur

    x = _smooth_images(5, seed=4)
    angle = torch.linspace(-45, 45, 5)
    whole = torch_blur.motion_blur_layer(x, 10, 3.0, angle)
    monkeypatch.setattr(torch_blur, "MOTION_CHUNK", 2)
    torch.testing.assert_close(torch_blur.motion_blur_layer(x, 10, 3.0, angle), whole, atol=0, rtol=0)
