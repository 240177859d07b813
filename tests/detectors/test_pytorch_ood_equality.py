"""Score equality with pytorch-ood 0.4.0 on the same model and the same fit data: every
own detector that pytorch-ood also has returns pytorch-ood's outlier scores (same sign:
both are higher = more OOD) to ~1e-5."""
from __future__ import annotations

import pytest
import torch

import atom_plugin  # noqa: F401  (before pytorch_ood)
from atom_plugin.detectors import ASH, DICE, GEN, KNN, RMD, Entropy, KLMatching, MaxLogit, ReAct, ViM
from atom_plugin.features import PenultimateTap
from atom_plugin.models import Normalize, SmallCNN

pood = pytest.importorskip("pytorch_ood.detector")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval()
    with torch.no_grad():  # spread the logits of the untrained net (varied predictions and scores)
        model.model.fc.weight.mul_(20.0)
    g = torch.Generator().manual_seed(0)
    # ID-ish fit data: smooth colour blobs with labels covering all 10 classes
    base = torch.rand(10, 3, 1, 1, generator=g)
    y = torch.arange(120) % 10
    x = (base[y] + 0.15 * torch.randn(120, 3, 16, 16, generator=g)).clamp(0, 1)
    loader = [(x[i: i + 40], y[i: i + 40]) for i in range(0, 120, 40)]
    test = torch.cat([x[:8], torch.rand(8, 3, 16, 16, generator=g)])
    tap = PenultimateTap(model)
    return dict(model=model, loader=loader, test=test, encoder=lambda v: tap(v)[1], linear=tap.linear)


def _close(ours, theirs, rtol=1e-5):
    ours, theirs = ours.detach().double(), theirs.detach().double()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * max(theirs.abs().max().item(), 1.0))


def _ours(det, setup):
    if det.requires_fit and not det.fitted:
        det.fit(setup["loader"])
    with torch.no_grad():
        return det.score(setup["test"])


def test_maxlogit_entropy_gen_equal(setup):
    m = setup["model"]
    with torch.no_grad():
        z = m(setup["test"])
    _close(_ours(MaxLogit(m), setup), pood.MaxLogit(None).predict_logits(z))
    _close(_ours(Entropy(m), setup), pood.Entropy(None).predict_logits(z))
    _close(_ours(GEN(m), setup), pood.GEN(None).predict_logits(z))
    _close(_ours(GEN(m, gamma=0.5, M=3), setup), pood.GEN(None, gamma=0.5, M=3).predict_logits(z))


def test_klmatching_equal(setup):
    m = setup["model"]
    ref = pood.KLMatching(m).to("cpu")
    ref.fit(setup["loader"])
    _close(_ours(KLMatching(m), setup), ref.predict(setup["test"]))


def test_knn_equal(setup):
    ref = pood.KNN(setup["encoder"], k=5).to("cpu")
    ref.fit(setup["loader"])
    _close(_ours(KNN(setup["model"], k=5), setup), ref.predict(setup["test"]).float())


def test_vim_equal(setup):
    # d = 2: the untrained net's feature covariance has a wide eigenvalue gap after the 2
    # largest, so the residual subspace is well defined in float32 (with d = 6 it sits
    # between eigenvalues 1e-7 apart and pytorch-ood's own float32 result is off by 1e-4)
    lin = setup["linear"]
    ref = pood.ViM(setup["encoder"], d=2, w=lin.weight, b=lin.bias).to("cpu")
    ref.fit(setup["loader"])
    _close(_ours(ViM(setup["model"], d=2), setup), ref.predict(setup["test"]))


def test_react_equal(setup):
    ref = pood.ReAct(setup["encoder"], setup["linear"], percentile=0.8).to("cpu")
    ref.fit(setup["loader"])
    det = ReAct(setup["model"], percentile=0.8)
    _close(_ours(det, setup), ref.predict(setup["test"]))
    assert det.threshold == pytest.approx(ref.threshold)


@pytest.mark.parametrize("variant", ["ash-s", "ash-p", "ash-b"])
def test_ash_equal(setup, variant):
    ref = pood.ASH(lambda v: setup["encoder"](v)[:, :, None, None], lambda f: setup["linear"](f.flatten(1)),
                   variant=variant, percentile=0.6)
    _close(_ours(ASH(setup["model"], variant=variant, percentile=0.6), setup), ref.predict(setup["test"]))


def test_dice_equal(setup):
    lin = setup["linear"]
    ref = pood.DICE(setup["encoder"], w=lin.weight, b=lin.bias, p=0.7).to("cpu")
    ref.fit(setup["loader"])
    _close(_ours(DICE(setup["model"], p=0.7), setup), ref.predict(setup["test"]))


def test_rmd_equal(setup):
    ref = pood.RMD(setup["encoder"]).to("cpu")
    ref.fit(setup["loader"])
    _close(_ours(RMD(setup["model"]), setup), ref.predict(setup["test"]))
