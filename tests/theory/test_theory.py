"""ATOM Section 3 / Appendix A.2: Gaussian model, averaging vs outlier-mining detector."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from atom_plugin import theory as th

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gaussian_theory.py"


# ------------------------------------------------------------------ Proposition 1's separation
@pytest.mark.parametrize("seed,mu", [(0, "ones"), (1, "ones"), (2, "gaussian")])
def test_proposition1_separation(seed, mu):
    rows, thetas = th.simulate(4096, eps=0.25, seed=seed, mu=mu, return_thetas=True)
    by = {r["detector"]: r for r in rows}
    avg, om = by["averaging"], by["mining"]
    # mining: the paper's bound (3), FNR and sup_Q robust FPR <= 1e-3
    assert om["fnr"] <= 1e-3 and om["worst_fpr"] <= 1e-3
    assert om["cos_mu"] > 0.9
    # the window keeps (almost) only informative outliers, about half of them
    assert om["selected_informative"] >= 0.99
    assert 0.3 * om["n_aux"] <= om["n_selected"] <= 0.55 * om["n_aux"]
    # averaging: points away from mu (towards -7 mu / 4) and has the worst errors
    assert avg["cos_mu"] < -0.95
    assert th.cosine(thetas["averaging"], thetas["oracle"]) < 0
    assert avg["fnr"] > 0.999 and avg["worst_fpr"] > 0.999
    assert by["oracle"]["fnr"] <= om["fnr"]


def test_separation_grows_with_dimension():
    rows = th.sweep([16, 256, 4096], eps=0.25, seed=0)
    om = [r for r in rows if r["detector"] == "mining"]
    avg = [r for r in rows if r["detector"] == "averaging"]
    assert om[0]["fnr"] > om[1]["fnr"] > om[2]["fnr"]
    assert om[0]["worst_fpr"] > om[1]["worst_fpr"] > om[2]["worst_fpr"]
    assert all(r["fnr"] > 0.9 and r["worst_fpr"] > 0.9 for r in avg)


def test_averaging_tends_to_minus_seven_quarters_mu():
    model = th.make_instance(8)
    rng = np.random.default_rng(3)
    theta = th.fit_averaging(th.sample_in(model, 200_000, rng), th.sample_aux_mix(model, 200_000, rng))
    np.testing.assert_allclose(theta, -7 / 4 * model.mu, atol=0.05)  # per-coordinate std ~ 0.007


def test_ideal_aux_averaging_works_and_samplers_have_right_means():
    model = th.make_instance(64)
    rng = np.random.default_rng(4)
    ideal = th.sample_aux_ideal(model, 20_000, rng)
    np.testing.assert_allclose(ideal.mean(0), -model.mu, atol=0.15)  # E v = 0
    v = np.zeros(64)
    v[0] = model.nu
    q = th.sample_ood(model, 20_000, rng, v=v)
    np.testing.assert_allclose(q.mean(0), -model.mu + v, atol=0.15)
    x_aux, informative = th.sample_aux_mix(model, 20_000, rng, return_source=True)
    assert abs(informative.mean() - 0.5) < 0.02
    np.testing.assert_allclose(x_aux[~informative].mean(0), 10 * model.mu, atol=0.15)
    theta = th.fit_averaging(th.sample_in(model, 2000, rng), ideal[:2000])
    assert th.cosine(theta, model.mu) > 0.95


def test_instance_follows_equation_15():
    m = th.make_instance(400, n0=4)
    assert m.sigma ** 2 == pytest.approx(math.sqrt(400 / 4))
    assert m.nu == pytest.approx(math.sqrt(400) / 4) and m.mu_norm == pytest.approx(20.0)
    g = th.make_instance(10_000, mu="gaussian", seed=0)
    assert 0.9 * 10_000 < g.mu_norm ** 2 < 1.1 * 10_000
    assert th.eq15_satisfied(16384, 1, 0.1) and not th.eq15_satisfied(4096, 1, 0.1)
    assert th.eq15_satisfied(1024, 1, 0.25)


# ------------------------------------------------------------------ mining detector (eq. 47-49)
def test_fit_mining_selects_confidence_window():
    model = th.make_instance(256)
    rng = np.random.default_rng(5)
    x_in = th.sample_in(model, 400, rng)
    x_aux, informative = th.sample_aux_mix(model, 400, rng, return_source=True)
    theta, mask = th.fit_mining(x_in, x_aux, return_mask=True)
    f = 1 / (1 + np.exp(-(x_aux @ x_in.mean(0)) / 256))  # equation 48 written out
    a, b = 1 / (1 + math.exp(1.5)), 1 / (1 + math.exp(0.5))
    np.testing.assert_array_equal(mask, (f >= a) & (f <= b))
    np.testing.assert_allclose(theta, -x_aux[mask].mean(0))
    assert mask.any() and not (mask & ~informative).any()  # no point from N(10 mu) survives
    np.testing.assert_allclose(th.confidence(x_aux, x_in.mean(0)), f)
    # a wider window lets the uninformative mode in and breaks the detector
    bad = th.fit_mining(x_in, x_aux, a=a, b=1.0)
    assert th.cosine(bad, model.mu) < 0


def test_empty_window_gives_zero_detector_with_warning():
    model = th.make_instance(16)
    rng = np.random.default_rng(6)
    with pytest.warns(RuntimeWarning, match="no auxiliary point"):
        theta = th.fit_mining(th.sample_in(model, 50, rng), th.sample_aux_mix(model, 50, rng), a=0.9, b=0.9)
    assert not theta.any()
    assert th.fnr(theta, model) == 1.0 and th.worst_fpr(theta, model, 0.1) == 1.0


def test_simulate_streaming_equals_array_fits():
    d, n, n_aux = 32, 50, 60
    rows, thetas = th.simulate(d, n=n, n_aux=n_aux, seed=7, chunk_size=7, return_thetas=True)
    g_mu, g_in, g_aux, _, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(7).spawn(5))
    model = th.make_instance(d, seed=g_mu)
    x_in = np.concatenate([th.sample_in(model, min(7, n - s), g_in) for s in range(0, n, 7)])
    x_aux = np.concatenate([th.sample_aux_mix(model, min(7, n_aux - s), g_aux) for s in range(0, n_aux, 7)])
    np.testing.assert_allclose(thetas["averaging"], th.fit_averaging(x_in, x_aux), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(thetas["mining"], th.fit_mining(x_in, x_aux), rtol=1e-12, atol=1e-12)
    by = {r["detector"]: r for r in rows}
    assert by["mining"]["fnr"] == pytest.approx(th.fnr(thetas["mining"], model))
    # one chunk = plain one-shot sampling
    _, t1 = th.simulate(d, n=n, n_aux=n_aux, seed=7, return_thetas=True)
    g_mu, g_in, g_aux, _, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(7).spawn(5))
    model = th.make_instance(d, seed=g_mu)
    x_in, x_aux = th.sample_in(model, n, g_in), th.sample_aux_mix(model, n_aux, g_aux)
    np.testing.assert_allclose(t1["mining"], th.fit_mining(x_in, x_aux), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ errors (eq. 16, 18-24)
def test_closed_forms_match_monte_carlo():
    model = th.make_instance(16)
    rng = np.random.default_rng(8)
    thetas = np.stack([model.mu + 0.8 * rng.standard_normal(16), model.mu, -model.mu + rng.standard_normal(16)])
    n, eps = 40_000, 0.3
    fnr_mc = th.empirical_fnr(thetas, model, n, rng, chunk_size=5000)
    fpr_mc = th.empirical_worst_fpr(thetas, model, eps, n, rng, chunk_size=5000)
    for k in range(3):
        p, q = th.fnr(thetas[k], model), th.worst_fpr(thetas[k], model, eps)
        assert abs(fnr_mc[k] - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-4
        assert abs(fpr_mc[k] - q) <= 5 * math.sqrt(q * (1 - q) / n) + 1e-4
    assert 0.01 < th.fnr(thetas[0], model) < 0.2 and 0.1 < th.worst_fpr(thetas[0], model, eps) < 0.6
    # a fixed shift v: equation 21, and it never exceeds the sup over Q (equation 24)
    v = rng.standard_normal(16)
    v *= 0.7 * model.nu / np.linalg.norm(v)
    q_v = th.worst_fpr(thetas[0], model, eps, v=v)
    mc = th.empirical_worst_fpr(thetas[0], model, eps, n, rng, v=v)
    assert abs(mc - q_v) <= 5 * math.sqrt(q_v * (1 - q_v) / n) + 1e-4
    assert q_v <= th.worst_fpr(thetas[0], model, eps)
    assert th.worst_fpr(thetas[0], model, eps, v=th.worst_case_shift(thetas[0], model)) == pytest.approx(
        th.worst_fpr(thetas[0], model, eps))


def test_worst_case_perturbation_and_shift_are_optimal():
    rng = np.random.default_rng(9)
    model = th.make_instance(20)
    theta = rng.standard_normal(20)
    delta = th.worst_case_perturbation(theta, 0.2)
    assert np.abs(delta).max() == pytest.approx(0.2)
    assert theta @ delta == pytest.approx(0.2 * np.abs(theta).sum())
    rand = rng.uniform(-0.2, 0.2, size=(1000, 20))
    assert (rand @ theta <= theta @ delta + 1e-12).all()
    v = th.worst_case_shift(theta, model)
    assert np.linalg.norm(v) == pytest.approx(model.nu)
    assert v @ theta == pytest.approx(model.nu * np.linalg.norm(theta))
    # eps = 0 and nu = 0 reduce equation 24 to the clean FPR Phi(-mu^T theta / (sigma ||theta||))
    clean = th.GaussianModel(model.mu, model.sigma, 0.0)
    assert th.worst_fpr(model.mu, clean, 0.0) == pytest.approx(th.fnr(model.mu, clean))


# ------------------------------------------------------------------ input validation
@pytest.mark.parametrize("call,exc,word", [
    (lambda: th.make_instance(0), ValueError, "`d`"),
    (lambda: th.make_instance(True), TypeError, "`d`"),
    (lambda: th.make_instance(8, n0=0), ValueError, "`n0`"),
    (lambda: th.make_instance(8, mu="uniform"), ValueError, "`mu`"),
    (lambda: th.make_instance(8, mu=np.ones(3)), ValueError, "`mu`"),
    (lambda: th.make_instance(16, nu=1.5), ValueError, "`nu`"),
    (lambda: th.make_instance(16, nu=-0.1), ValueError, "`nu`"),
    (lambda: th.GaussianModel(np.zeros(3), 1.0, 0.1), ValueError, "`mu`"),
    (lambda: th.GaussianModel(np.ones(3), 0.0, 0.1), ValueError, "`sigma`"),
    (lambda: th.simulate(8, eps=0.5), ValueError, "`eps`"),
    (lambda: th.simulate(8, eps=-0.01), ValueError, "`eps`"),
    (lambda: th.simulate(8, n=0), ValueError, "`n`"),
    (lambda: th.simulate(8, n_eval=-1), ValueError, "`n_eval`"),
    (lambda: th.simulate(8, seed=1.5), TypeError, "`seed`"),
    (lambda: th.simulate(0), ValueError, "`d`"),
    (lambda: th.sweep([]), ValueError, "`dims`"),
    (lambda: th.worst_fpr(np.ones(4), th.make_instance(4), 0.7), ValueError, "`eps`"),
    (lambda: th.worst_fpr(np.ones(3), th.make_instance(4), 0.1), ValueError, "`theta`"),
    (lambda: th.worst_fpr(np.ones(4), th.make_instance(4), 0.1, v=10 * np.ones(4)), ValueError, "`v`"),
    (lambda: th.fnr(np.ones(4), "model"), TypeError, "`model`"),
    (lambda: th.fnr(np.array([1.0, np.nan]), th.make_instance(2)), ValueError, "`theta`"),
    (lambda: th.sample_ood(th.make_instance(4), 5, v=np.ones(4)), ValueError, "`v`"),
    (lambda: th.fit_averaging(np.ones((3, 4)), np.ones((3, 5))), ValueError, "`x_aux`"),
    (lambda: th.fit_averaging(np.ones(4), np.ones((3, 4))), ValueError, "`x_in`"),
    (lambda: th.fit_mining(np.ones((3, 4)), np.ones((3, 4)), a=0.6, b=0.4), ValueError, "`a`"),
    (lambda: th.fit_mining(np.ones((3, 4)), np.ones((3, 4)), b=1.5), ValueError, "`b`"),
    (lambda: th.empirical_fnr(np.ones(4), th.make_instance(4), 0), ValueError, "`n`"),
])
def test_validation_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# ------------------------------------------------------------------ example smoke run
def test_example_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gaussian_theory_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--dims", "4", "64", "--n-eval", "200", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "averaging" in out and "mining" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["rows"]) == 8 and data["config"]["dims"] == [4, 64]
    assert {r["detector"] for r in data["rows"]} == {"averaging", "mining", "oracle", "averaging_ideal"}
    assert (tmp_path / "gaussian_theory.png").stat().st_size > 1000
