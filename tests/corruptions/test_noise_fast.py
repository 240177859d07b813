"""The fast exact samplers of the noise corruptions (torch backend): shot noise's alias
sampler must give exactly clamp(Poisson(x c) / c, 0, 1) per element, for 8-bit inputs
(tabulated) and any other float input (direct path), checked against scipy's Poisson pmf."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atom_plugin.corruptions import corrupt
from atom_plugin.corruptions.tables import table_params

stats = pytest.importorskip("scipy.stats")


def _chi2_pvalue(values: torch.Tensor, rate: float, c: float) -> float:
    """Chi-square test of min(Poisson(rate), c) / c (scipy's pmf) on ``values``: bins
    k / c for k < c and the clamped value 1, sparse bins merged (expected >= 20)."""
    n = values.numel()
    k = torch.round(values.double() * c).long().clamp_(max=int(np.ceil(c)))
    top = int(np.ceil(c))
    counts = torch.bincount(k, minlength=top + 1).double().numpy()
    assert counts.sum() == n
    # every value must be one of the possible outcomes k / c (k < c) or 1
    ks = np.arange(top)
    expect_vals = np.append(ks / c, 1.0)
    got = np.unique(values.double().numpy())
    assert np.all(np.min(np.abs(got[:, None] - expect_vals[None, :]), 1) < 1e-6), got
    p = np.append(stats.poisson.pmf(ks, rate), stats.poisson.sf(top - 1, rate))
    exp = p * n
    obs_b, exp_b, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(counts, exp):
        acc_o += o
        acc_e += e
        if acc_e >= 20:
            obs_b.append(acc_o)
            exp_b.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0 or acc_o > 0:
        if exp_b:
            obs_b[-1] += acc_o
            exp_b[-1] += acc_e
        else:
            obs_b.append(acc_o)
            exp_b.append(acc_e)
    obs_b, exp_b = np.array(obs_b), np.array(exp_b)
    if len(exp_b) == 1:  # a single outcome (rate 0): every sample must be it
        return 1.0 if obs_b[0] == n else 0.0
    chi2 = float(((obs_b - exp_b) ** 2 / exp_b).sum())
    return float(stats.chi2.sf(chi2, len(exp_b) - 1))


@pytest.mark.parametrize("table,severity", [("imagenet", 1), ("imagenet", 3), ("imagenet", 5), ("cifar", 1)])
def test_shot_noise_is_clamped_poisson_on_8bit_values(table, severity):
    c = float(table_params(table, "shot_noise", severity))
    levels = [0, 1, 7, 64, 200, 255]
    n = 120_000
    x = torch.cat([torch.full((1, 3, 200, 200), v / 255.0) for v in levels])
    y = corrupt(x, "shot_noise", severity, seed=1, table=table)
    for v, img in zip(levels, y):
        rate = float(np.float32(v / 255.0)) * c  # the image's float32 value times c
        pv = _chi2_pvalue(img.reshape(-1)[:n], rate, c)
        assert pv > 1e-4, (table, severity, v, pv)


def test_shot_noise_off_grid_and_mixed_inputs():
    """Values that are not k / 255 take the direct path; mixed tensors stay exact per element."""
    c = float(table_params("imagenet", "shot_noise", 2))
    n = 60_000
    on = torch.full((n,), 100 / 255.0)
    off = torch.full((n,), 0.3137)  # between 80/255 and 81/255
    x = torch.stack([on, off], 0).T.reshape(1, 1, n, 2).expand(1, 3, n, 2).contiguous()
    y = corrupt(x, "shot_noise", 2, seed=5, table="imagenet")
    assert _chi2_pvalue(y[0, :, :, 0].reshape(-1)[:n], float(np.float32(100 / 255.0)) * c, c) > 1e-4
    assert _chi2_pvalue(y[0, :, :, 1].reshape(-1)[:n], float(np.float32(0.3137)) * c, c) > 1e-4
    # float64 images and an odd number of elements (the chunking's tail)
    x64 = torch.full((3, 3, 101, 37), 37 / 255.0, dtype=torch.float64)
    y64 = corrupt(x64, "shot_noise", 4, seed=2, table="imagenet")
    assert y64.dtype == torch.float64
    c4 = float(table_params("imagenet", "shot_noise", 4))
    assert _chi2_pvalue(y64.reshape(-1), 37 / 255.0 * c4, c4) > 1e-4


def test_chi2_check_detects_a_wrong_rate():
    """The check above can fail: a 3% higher rate is rejected at this sample size."""
    g = torch.Generator().manual_seed(0)
    c = 25.0
    wrong = (torch.poisson(torch.full((120_000,), 0.5 * c * 1.03), generator=g) / c).clamp_(0, 1)
    assert _chi2_pvalue(wrong, 0.5 * c, c) < 1e-4


def test_shot_noise_seeded_and_batch_independent():
    x = (torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    a = corrupt(x, "shot_noise", 3, seed=7, table="imagenet")
    assert torch.equal(a, corrupt(x, "shot_noise", 3, seed=7, table="imagenet"))
    assert not torch.equal(a, corrupt(x, "shot_noise", 3, seed=8, table="imagenet"))
