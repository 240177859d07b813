"""Objectives: values against direct float64 formulas, stability at extreme logits, signs."""
from __future__ import annotations

import math

import pytest
import torch

from atom_plugin import objectives as O

EXTREME = torch.tensor([[1e4, -1e4, 0.0, 5e3, -3e3], [-1e4, -1e4, -1e4, 1e4, 2.0]])


def _rand_logits(b=16, c=7, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * scale


def _ref_softmax64(z):
    z = z.double()
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def _grad(fn, z):
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(z).sum(), z)
    return g


# -- values against float64 formulas -------------------------------------------------------
@pytest.mark.parametrize("k", [None, 4, 7])
def test_uniform_ce_matches_formula(k):
    z = _rand_logits()
    kk = z.shape[1] if k is None else k
    p = _ref_softmax64(z[:, :kk])
    ref = -(torch.log(p)).sum(1) / kk
    torch.testing.assert_close(O.uniform_ce(z, k).double(), ref, rtol=1e-5, atol=1e-5)


def test_reject_nll_matches_formula():
    z = _rand_logits(c=6)
    ref = -torch.log(_ref_softmax64(z)[:, 5])
    torch.testing.assert_close(O.reject_nll(z, 5).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [3, 5])
def test_reject_sum_nll_matches_formula(k):
    z = _rand_logits(c=6)
    ref = -torch.log(_ref_softmax64(z)[:, k:].sum(1))
    torch.testing.assert_close(O.reject_sum_nll(z, k).double(), ref, rtol=1e-5, atol=1e-5)
    if k == 5:  # one reject class: the sum is the single reject probability
        torch.testing.assert_close(O.reject_sum_nll(z, 5), O.reject_nll(z, 5))


@pytest.mark.parametrize("t", [1.0, 2.5, 1000.0])
def test_energy_matches_formula(t):
    z = _rand_logits()
    ref = -t * torch.log(torch.exp(z.double() / t).sum(1))
    torch.testing.assert_close(O.energy(z, t).double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(O.neg_energy(z, t), -O.energy(z, t))
    torch.testing.assert_close(O.energy(z, t, num_classes=3), O.energy(z[:, :3], t))


def test_mahalanobis_logistic_matches_formula():
    g = torch.Generator().manual_seed(3)
    s = -torch.rand(10, 3, generator=g) * 50  # M_l = -distance <= 0
    a = torch.tensor([-0.2, -0.05, -0.1])
    b = -1.5
    d = s.double() @ a.double() + b
    ref = torch.log(1 + torch.exp(-d))
    torch.testing.assert_close(O.mahalanobis_logistic(s, a, b).double(), ref, rtol=1e-5, atol=1e-5)
    # it is -log P(OOD) with P(OOD) = sigmoid(OOD logit d)
    torch.testing.assert_close(O.mahalanobis_logistic(s, a, b).double(), -torch.log(torch.sigmoid(d)),
                               rtol=1e-5, atol=1e-5)
    # coef / intercept as numpy or tensors give the same
    import numpy as np

    torch.testing.assert_close(O.mahalanobis_logistic(s, a.numpy(), np.float64(b)),
                               O.mahalanobis_logistic(s, a, torch.tensor([b])))


# -- extreme logits: naive formulas overflow, ours stay finite and exact -------------------
def test_extreme_logits_naive_fails_ours_exact():
    z = EXTREME.clone()  # float32
    naive_p = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    assert not torch.isfinite(-torch.log(naive_p)).all()  # the naive formula is inf / NaN

    # exact values: lse(z) = max(z) (other terms are exp(-5000) or smaller)
    lse = torch.tensor([1e4, 1e4], dtype=torch.float64)
    mean5 = EXTREME.double().mean(1)
    torch.testing.assert_close(O.uniform_ce(z).double(), lse - mean5, rtol=1e-6, atol=1e-2)
    torch.testing.assert_close(O.reject_nll(z, 4).double(), lse - EXTREME.double()[:, 4], rtol=1e-6, atol=1e-2)
    torch.testing.assert_close(O.reject_sum_nll(z, 3).double(),
                               lse - EXTREME.double()[:, 3:].max(1).values, rtol=1e-6, atol=1e-2)
    torch.testing.assert_close(O.energy(z).double(), -lse, rtol=1e-6, atol=1e-2)
    # sample 1: reject logit 2 against a max logit of 1e4: -log softmax_4 = 1e4 - 2
    assert abs(float(O.reject_nll(z, 4)[1]) - (1e4 - 2.0)) < 1e-2

    s = torch.tensor([[-1e4, -1e4], [1e4, 1e4]])
    a = torch.tensor([0.5, 0.5])
    naive = torch.log(1 + torch.exp(-(s @ a)))
    assert not torch.isfinite(naive).all()
    torch.testing.assert_close(O.mahalanobis_logistic(s, a, 0.0), torch.tensor([1e4, 0.0]), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("name,fn", [
    ("uniform_ce", lambda z: O.uniform_ce(z)),
    ("uniform_ce_k", lambda z: O.uniform_ce(z, 3)),
    ("reject_nll", lambda z: O.reject_nll(z, 4)),
    ("reject_sum_nll", lambda z: O.reject_sum_nll(z, 3)),
    ("energy", lambda z: O.energy(z, 1.0)),
    ("neg_energy_T", lambda z: O.neg_energy(z, 1000.0)),
])
def test_gradients_finite_and_correct_at_extremes(name, fn):
    z = EXTREME.clone()
    g32 = _grad(fn, z)
    assert torch.isfinite(g32).all()
    g64 = _grad(fn, z.double())
    torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-6)
    # and on ordinary logits, autograd agrees with finite differences in float64
    zz = _rand_logits(b=3, c=5, seed=7).double()
    torch.autograd.gradcheck(fn, (zz.requires_grad_(True),))


def test_mahalanobis_logistic_gradient_finite_at_extremes():
    s = torch.tensor([[-1e4, -1e4], [1e4, 1e4], [0.0, 1.0]], requires_grad=True)
    out = O.mahalanobis_logistic(s, torch.tensor([0.5, 0.5]), 0.0)
    (g,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g[0], torch.tensor([-0.5, -0.5]))  # d/ds softplus(-s.a) = -a * sigmoid(s.a) -> -a
    torch.testing.assert_close(g[1], torch.zeros(2))


# -- signs: what an attacker maximizing the objective achieves ------------------------------
def test_signs_maximizing_makes_input_look_in_distribution():
    k = 4
    uniform = torch.zeros(1, k)
    confident = torch.tensor([[8.0, 0.0, 0.0, 0.0]])
    # uniform_ce is minimal (log K) at the uniform (OOD-looking) prediction, larger when confident
    assert math.isclose(float(O.uniform_ce(uniform)), math.log(k), rel_tol=1e-6)
    assert float(O.uniform_ce(confident)) > float(O.uniform_ce(uniform))
    # K+1 model: higher reject logit -> lower reject_nll; maximizing lowers the reject probability
    low_rej, high_rej = torch.tensor([[2.0, 0, 0, 0, -3.0]]), torch.tensor([[2.0, 0, 0, 0, 6.0]])
    assert float(O.reject_nll(low_rej, k)) > float(O.reject_nll(high_rej, k))
    assert float(O.reject_sum_nll(low_rej, k)) > float(O.reject_sum_nll(high_rej, k))
    # energy is a score: confident (ID-looking) logits have lower energy
    big = torch.tensor([[9.0, 0.0, 0.0, 0.0]])
    assert float(O.energy(big)) < float(O.energy(uniform))
    # mahalanobis_logistic = -log P(OOD): larger OOD logit -> smaller objective
    a = torch.tensor([-1.0])
    near, far = torch.tensor([[-1.0]]), torch.tensor([[-10.0]])  # M = -distance
    assert float(O.mahalanobis_logistic(near, a, 0.0)) > float(O.mahalanobis_logistic(far, a, 0.0))


def test_shift_invariance_seeded_sweep():
    for seed in range(5):
        z = _rand_logits(b=4, c=6, seed=seed)
        c = torch.randn(4, 1) * 100
        torch.testing.assert_close(O.uniform_ce(z + c), O.uniform_ce(z), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(O.reject_nll(z + c, 5), O.reject_nll(z, 5), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(O.reject_sum_nll(z + c, 3), O.reject_sum_nll(z, 3), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(O.energy(z + c), O.energy(z) - c[:, 0], rtol=1e-4, atol=1e-3)


# -- errors -----------------------------------------------------------------------------
def test_kway_logits_to_reject_objective_errors():
    z = _rand_logits(c=10)
    with pytest.raises(ValueError, match="with_reject_head"):
        O.reject_nll(z, 10)
    with pytest.raises(ValueError, match="K\\+1"):
        O.reject_nll(z, 8)  # 10 columns, K=8 -> R=2, not a K+1 model
    with pytest.raises(ValueError, match="reject class"):
        O.reject_sum_nll(z, 10)
    with pytest.raises(ValueError, match="num_classes"):
        O.uniform_ce(z, 11)


def test_bad_inputs_error():
    with pytest.raises(ValueError, match="logits"):
        O.uniform_ce(torch.zeros(3))
    with pytest.raises(TypeError, match="logits"):
        O.uniform_ce([[1.0, 2.0]])
    with pytest.raises(TypeError, match="logits"):
        O.uniform_ce(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        O.energy(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="coef"):
        O.mahalanobis_logistic(torch.zeros(2, 3), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="intercept"):
        O.mahalanobis_logistic(torch.zeros(2, 3), torch.zeros(3), torch.zeros(2))


def test_get_objective_and_call_objective():
    assert O.get_objective("uniform_ce") is O.uniform_ce
    assert O.get_objective("energy") is O.neg_energy
    with pytest.raises(ValueError, match="neg_energy"):
        O.get_objective(O.energy)
    with pytest.raises(ValueError, match="one of"):
        O.get_objective("nope")
    z = _rand_logits(c=5)
    torch.testing.assert_close(O.call_objective(O.reject_nll, z, 4), O.reject_nll(z, 4))
    torch.testing.assert_close(O.call_objective(lambda q: q[:, 0], z, 4), z[:, 0])
    with pytest.raises(ValueError, match="one value per sample"):
        O.call_objective(lambda q: q.mean(), z, None)
