"""The torch JPEG (libjpeg-turbo's integer pipeline) and pixelate (Pillow's BOX / NEAREST)
against Pillow itself, image by image: both must be bit-exact, at awkward sizes, across the
chunks the CPU path splits a batch into, and without the reused scratch memory leaking
between calls."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import atom_plugin  # noqa: F401
from atom_plugin.corruptions import corrupt
from atom_plugin.corruptions import torch_digital as td
from atom_plugin.corruptions import torch_jpeg as tj

PIL = pytest.importorskip("PIL.Image")


def _images(n: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images plus noise and a few hard edges, 8-bit, (n, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, max(H // 8, 1), max(W // 8, 1), generator=g)
    x = torch.nn.functional.interpolate(base, size=(H, W), mode="bilinear", align_corners=False)
    x = x + 0.15 * torch.randn(n, 3, H, W, generator=g)
    x[:, :, : H // 3, : W // 4] = 1.0
    return (x.clamp(0, 1) * 255).round() / 255


def _u8(x1: torch.Tensor) -> np.ndarray:
    return (x1.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _pil_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    PIL.fromarray(u8).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(PIL.open(buf).convert("RGB")).astype(np.int64)


def _as255(out1: torch.Tensor) -> np.ndarray:
    return (out1.permute(1, 2, 0).double() * 255).round().numpy().astype(np.int64)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 5), (8, 8), (17, 5), (4, 37), (33, 47), (100, 100), (64, 96)])
def test_jpeg_bit_exact_with_pillow(size):
    H, W = size
    x = _images(2, H, W, seed=H * 1000 + W)
    for s, quality in enumerate(td.SEVERITY_TABLES["imagenet"]["jpeg_compression"], 1):
        out = corrupt(x, "jpeg_compression", s, table="imagenet")
        for i in range(2):
            ref = _pil_jpeg(_u8(x[i]), quality)
            assert np.array_equal(_as255(out[i]), ref), (size, s, i, int(np.abs(_as255(out[i]) - ref).max()))


def test_jpeg_bit_exact_high_quality_table_and_chunks():
    """CIFAR qualities (>= 50: the other scaling branch) on a batch that spans several CPU
    chunks, float64 input, gray input."""
    x = _images(7, 160, 224, seed=1)  # 2^17 pixels per chunk: 3 images
    for s, quality in enumerate(td.SEVERITY_TABLES["cifar"]["jpeg_compression"], 1):
        out = corrupt(x, "jpeg_compression", s, table="cifar")
        for i in range(7):
            assert np.array_equal(_as255(out[i]), _pil_jpeg(_u8(x[i]), quality)), (s, i)
    out64 = corrupt(x.double(), "jpeg_compression", 5, table="cifar")
    assert out64.dtype == torch.float64
    assert torch.equal(out64.float(), corrupt(x, "jpeg_compression", 5, table="cifar"))


def test_islow_matrices_are_the_scaled_dct():
    """libjpeg's islow constants: 2^13 x the DCT-II basis with the sqrt(2) of rows 1..7
    (jfdctint.c), rounded within a couple of units; the inverse is the transpose."""
    fwd, inv = tj.islow_matrices()
    k = np.arange(8)
    basis = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.where(k[:, None] == 0, 1.0, np.sqrt(2))
    assert np.abs(fwd - 8192 * basis).max() <= 2
    assert np.abs(inv - fwd.T).max() <= 2


def test_jpeg_output_does_not_alias_scratch():
    """The scratch buffers are reused: an earlier result must survive later calls."""
    x = _images(3, 48, 48, seed=2)
    y = _images(3, 48, 48, seed=3)
    a = corrupt(x, "jpeg_compression", 3, table="imagenet")
    keep = a.clone()
    corrupt(y, "jpeg_compression", 5, table="imagenet")
    corrupt(y, "pixelate", 5, table="imagenet")
    assert torch.equal(a, keep)
    p = corrupt(x, "pixelate", 2, table="imagenet")
    keep = p.clone()
    corrupt(y, "pixelate", 4, table="imagenet")
    corrupt(y, "jpeg_compression", 1, table="imagenet")
    assert torch.equal(p, keep)


def _pil_pixelate(u8: np.ndarray, c: float, up) -> np.ndarray:
    H, W = u8.shape[:2]
    small = PIL.fromarray(u8).resize((int(W * c), int(H * c)), PIL.BOX)
    return np.asarray(small.resize((W, H), up)).astype(np.int64)


@pytest.mark.parametrize("size", [(224, 224), (37, 91), (160, 224)])
def test_pixelate_exact_across_chunks(size):
    """A batch larger than one CPU chunk, every table, float32 and float64."""
    H, W = size
    x = _images(5, H, W, seed=H + W)
    ups = {"imagenet": PIL.NEAREST, "cifar": PIL.BOX, "tinyimagenet": PIL.BOX}
    for table, up in ups.items():
        for s, c in enumerate(td.SEVERITY_TABLES[table]["pixelate"], 1):
            out = corrupt(x, "pixelate", s, table=table)
            out64 = corrupt(x.double(), "pixelate", s, table=table)
            assert out64.dtype == torch.float64 and torch.equal(out64.float(), out)
            for i in range(5):
                assert np.array_equal(_as255(out[i]), _pil_pixelate(_u8(x[i]), c, up)), (size, table, s, i)


def test_box_plan_rounding_matches_pillow_fixed_point():
    """The float32 rounding of every window sum equals Pillow's 22-bit fixed point."""
    for n_in, n_out in [(224, 134), (224, 56), (97, 29), (512, 128), (9, 7)]:
        idx, off, scale = td._box_plan(n_in, n_out, torch.device("cpu"))
        A = td.box_matrix(n_in, n_out)
        for o in range(n_out):
            n = int((A[o] > 0).sum())
            S = np.arange(255 * n + 1)
            want = (S * int(A[o].max()) + (1 << 21)) >> 22
            got = torch.floor((torch.from_numpy(S).float() + off[o]) * scale[o]).long().numpy()
            assert np.array_equal(got, want), (n_in, n_out, o)
            window = idx[:, o][idx[:, o] < n_in].numpy()
            assert np.array_equal(window, np.flatnonzero(A[o] > 0))


def _pil_batch(x: torch.Tensor, quality: int) -> np.ndarray:
    return np.stack([_pil_jpeg(_u8(x[i]), quality) for i in range(x.shape[0])])


def _check_all_severities(x: torch.Tensor, table: str = "imagenet") -> None:
    for s, quality in enumerate(td.SEVERITY_TABLES[table]["jpeg_compression"], 1):
        out = corrupt(x, "jpeg_compression", s, table=table)
        got = np.stack([_as255(out[i]) for i in range(x.shape[0])])
        assert np.array_equal(got, _pil_batch(x, quality)), (tuple(x.shape), s)


def test_jpeg_cache_invisible_in_place_and_equal_content():
    """The CPU path reuses the quality-independent encoder half of the previous input: an
    in-place change of the same tensor (one image of one chunk, one pixel by one level),
    another tensor with equal content, and another shape must all give Pillow's output."""
    x = _images(5, 160, 224, seed=7)                  # 3 images per CPU chunk: 2 chunks
    _check_all_severities(x)
    x[4, 1, 80, 100] = (x[4, 1, 80, 100] * 255 + (1 if x[4, 1, 80, 100] < 1 else -1)).round() / 255
    _check_all_severities(x)                          # second chunk changed
    x[0] = _images(1, 160, 224, seed=8)[0]
    _check_all_severities(x)                          # first chunk changed
    y = x.clone()
    a = corrupt(x, "jpeg_compression", 2, table="imagenet")
    assert torch.equal(corrupt(y, "jpeg_compression", 2, table="imagenet"), a)
    z = _images(5, 160, 224, seed=9)
    _check_all_severities(z)
    _check_all_severities(_images(2, 40, 24, seed=10))
    _check_all_severities(x[1:3])                     # a view of the earlier input
    # odd H W with 3 images per chunk: the second chunk (2 images) starts at an odd offset
    w = _images(5, 191, 191, seed=12)
    _check_all_severities(w)
    w[3, 2, 190, 190] = 1.0 - w[3, 2, 190, 190]
    _check_all_severities(w)


def test_jpeg_cache_over_cap_and_threads(monkeypatch):
    """Batches larger than the cache cap (not cached) and concurrent threads (one cache each)
    stay exact."""
    import threading

    monkeypatch.setattr(tj, "_JPEG_CACHE_CAP", 1000)
    _check_all_severities(_images(2, 32, 32, seed=11))
    monkeypatch.undo()
    errors = []

    def work(seed):
        try:
            for k in range(2):
                _check_all_severities(_images(2, 48, 40, seed=seed + k))
        except AssertionError as e:                   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(20 + 10 * i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_quantizer_rounding_matches_libjpeg_exhaustively():
    """libjpeg's quantizer sign(c) floor((|c| + 4q) / 8q) (jcdctmgr.c) equals the float32
    round((c + sign(c) / 2) * fl(1 / 8q)) the torch path uses, for every q 1..255 and every
    |c| < 2^15."""
    c = torch.arange(-(1 << 15) + 1, 1 << 15, dtype=torch.int64)
    tt = (c.double() + 0.5 * torch.sign(c.double())).float()
    for q in range(1, 256):
        want = torch.sign(c) * ((c.abs() + 4 * q) // (8 * q))
        inv = torch.tensor(np.float32(1.0 / (8 * q)))
        assert torch.equal(torch.round(tt * inv).long(), want), q


def test_ycc_to_rgb_float32_sums_match_libjpeg_exhaustively():
    """jdcolor.c's y + ((FIX(k) c + ONE_HALF) >> 16) (R, B) and y + ((Cb_g c_b + Cr_g c_r +
    ONE_HALF) >> 16) (G), range-limited, equal the float32 floor(y + 1/2 + term) the torch
    path computes (term exact in 2^-16 units, the sum rounded), for every y, Cb, Cr."""
    Y = tj._YCC_RGB
    c = torch.arange(-128, 128, dtype=torch.int64)
    for k in (Y[0, 1], Y[2, 0]):                                  # R (Cr), B (Cb)
        for yv in range(256):
            want = (yv + ((int(k) * c + 32768) >> 16)).clamp(0, 255)
            got = torch.add(torch.full((256,), yv + 0.5), c.float(), alpha=k / 65536).floor_().clamp_(0, 255)
            assert torch.equal(got.long(), want), (k, yv)
    cb, cr = torch.meshgrid(c, c, indexing="ij")
    g = torch.mul(cb.float(), Y[1, 0] / 65536).add_(cr.float(), alpha=Y[1, 1] / 65536)
    gi = (int(Y[1, 0]) * cb + int(Y[1, 1]) * cr + 32768) >> 16
    for yv in range(256):
        got = g.add(torch.full_like(g, yv + 0.5)).floor_().clamp_(0, 255)
        assert torch.equal(got.long(), (yv + gi).clamp(0, 255)), yv
