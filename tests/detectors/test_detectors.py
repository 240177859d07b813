"""Detectors on tiny models trained in the test: detection works (AUROC), attack objectives
have useful gradients and point the right way, Mahalanobis fit / sign chain / state, errors."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from atom_plugin import objectives as O
from atom_plugin.detectors import (
    MSP, ODIN, Detector, Energy, Mahalanobis, NotFittedError, ObjectiveDetector, RejectClass, RejectSum,
    SaturationWarning, ScoreDetector, as_detector,
)
from atom_plugin.features import FeatureTap
from atom_plugin.models import Normalize, SmallCNN, with_reject_head

K = 4
SIZE = 8
COLORS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float32) * 0.6 - 0.3


def make_id(n: int, seed: int):
    """ID: K classes of flat colored images with pixel noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    x = 0.5 + COLORS[y][:, :, None, None] + 0.08 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(0, 1), y


def make_ood(n: int, seed: int):
    """OOD: uniform noise images."""
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _net():
    return Normalize(SmallCNN(K, width=4), [0.5] * 3, [0.25] * 3)


@pytest.fixture(scope="module")
def world():
    """A K-way model trained with outlier exposure and a K+1 model trained with the OOD
    data as class K (a few seconds on one thread), plus held-out ID / OOD test images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread avoids spin-waiting on a busy machine
    try:
        xi, yi = make_id(256, 0)
        xo = make_ood(256, 1)
        torch.manual_seed(0)
        kway, kp1 = _net(), with_reject_head(_net(), K)
        for model, mode in ((kway, "oe"), (kp1, "k+1")):
            opt = torch.optim.Adam(model.parameters(), 1e-2)
            model.train()
            for _ in range(25):
                idx = torch.randint(0, 256, (32,))
                zi, zo = model(xi[idx]), model(xo[idx])
                if mode == "oe":
                    loss = F.cross_entropy(zi, yi[idx]) + 0.5 * O.uniform_ce(zo).mean()
                else:
                    loss = F.cross_entropy(torch.cat([zi, zo]), torch.cat([yi[idx], torch.full((32,), K)]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            for p in model.parameters():
                p.grad = None
        ti, _ = make_id(64, 2)
        to = make_ood(64, 3)
        maha_ood = Mahalanobis(kway).fit([(xi[:128], yi[:128]), (xi[128:], yi[128:])], [xo[:128]],
                                         lr_samples=128)
        yield dict(kway=kway, kp1=kp1, train=(xi, yi), train_ood=xo, test_id=ti, test_ood=to,
                   maha_ood=maha_ood)
    finally:
        torch.set_num_threads(threads)


def _auroc(det, x_in, x_out):
    with torch.no_grad():
        a, b = det.score(x_in), det.score(x_out)
    return roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], torch.cat([a, b]).numpy())


def _detectors(w):
    return {
        "MSP": MSP(w["kway"]),
        "ODIN": ODIN(w["kway"], temperature=1000.0, epsilon=0.0014),
        "Energy": Energy(w["kway"]),
        "RejectClass": RejectClass(w["kp1"]),
        "RejectSum": RejectSum(w["kp1"]),
        "Mahalanobis": w["maha_ood"],
    }


NAMES = ["MSP", "ODIN", "Energy", "RejectClass", "RejectSum", "Mahalanobis"]


@pytest.mark.parametrize("name", NAMES)
def test_detects_easy_ood(world, name):
    det = _detectors(world)[name]
    assert _auroc(det, world["test_id"], world["test_ood"]) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_attack_gradient_and_one_step_lowers_score(world, name):
    det = _detectors(world)[name]
    x = world["test_ood"][:32]
    xr = x.clone().requires_grad_(True)
    loss = det.attack_loss(xr)
    assert loss.shape == (32,)
    (g,) = torch.autograd.grad(loss.sum(), xr)
    assert torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).all(), "attack_loss has a zero gradient for some inputs"
    x_adv = (x + g.sign() / 255).clamp(0, 1)  # one ascent step on attack_loss
    with torch.no_grad():
        before, after = det.score(x), det.score(x_adv)
        loss_after = det.attack_loss(x_adv)
    assert (after < before).float().mean() >= 0.8  # the OOD inputs look more in-distribution
    assert (loss_after > loss.detach()).float().mean() >= 0.8
    assert all(p.grad is None for p in det.model.parameters())  # no gradient left in the model


def test_internal_path_equals_public_and_skips_checks(world):
    for det in _detectors(world).values():
        x = world["test_ood"][:4]
        with torch.no_grad():
            torch.testing.assert_close(det._score(x), det.score(x))
            torch.testing.assert_close(det._attack_loss(x), det.attack_loss(x))
            det._score(x * 1.01)  # out of [0, 1]: the internal path does not check
        with pytest.raises(ValueError, match="\\[0, 1\\]"):
            det.score(x * 1.01 + 0.01)


# -- values against direct formulas ------------------------------------------------------------
def test_values_match_formulas(tiny_kway, images):
    k1 = with_reject_head(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3), 10, num_reject=3).eval()
    with torch.no_grad():
        z = tiny_kway(images).double()
        z3 = k1(images).double()
        p = torch.softmax(z, 1)
        torch.testing.assert_close(MSP(tiny_kway).score(images).double(), -p.max(1).values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(Energy(tiny_kway, 2.0).score(images).double(), -2 * torch.logsumexp(z / 2, 1),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ODIN(tiny_kway, 1000.0, 0.0).score(images).double(),
                                   -torch.softmax(z / 1000, 1).max(1).values, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(RejectSum(k1).score(images).double(), torch.softmax(z3, 1)[:, 10:].sum(1),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(RejectSum(k1).attack_loss(images), O.reject_sum_nll(k1(images), 10))
        torch.testing.assert_close(MSP(tiny_kway).attack_loss(images), O.uniform_ce(tiny_kway(images)))
        torch.testing.assert_close(Energy(tiny_kway).attack_loss(images), -O.energy(tiny_kway(images)))


def test_reject_class_values(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    with torch.no_grad():
        z = tiny_kplus1(images)
        torch.testing.assert_close(det.score(images), torch.softmax(z, 1)[:, 10])
        torch.testing.assert_close(det.attack_loss(images), -torch.log_softmax(z, 1)[:, 10])
        assert det.classify(images).shape == (8, 10)


# -- ODIN: adaptive through the preprocessing --------------------------------------------------
def test_odin_gradient_goes_through_preprocessing(world):
    net = world["kway"]
    x = world["test_ood"][:8].clone().requires_grad_(True)
    with_pre, without = ODIN(net, 1000.0, 0.01), ODIN(net, 1000.0, 0.0)
    with torch.no_grad():
        assert not torch.allclose(with_pre.score(x), without.score(x))  # preprocessing is active
        # preprocessing raises the max tempered softmax (lowers the score), as in Liang et al.
        assert (with_pre.score(x) < without.score(x)).float().mean() >= 0.8
    (g1,) = torch.autograd.grad(with_pre.attack_loss(x).sum(), x)
    (g0,) = torch.autograd.grad(without.attack_loss(x).sum(), x)
    assert torch.isfinite(g1).all() and (g1.flatten(1).abs().sum(1) > 0).all()
    assert not torch.allclose(g1, g0)  # evaluated at the preprocessed point, not at x


def test_odin_gradient_is_exact_almost_everywhere():
    """Directional finite differences (float64) agree with autograd: holding the sign()
    direction fixed is the exact derivative wherever the direction does not flip."""
    torch.manual_seed(0)
    net = Normalize(SmallCNN(K, width=4), [0.5] * 3, [0.25] * 3).double().eval()
    det = ODIN(net, temperature=10.0, epsilon=0.01)
    x = (0.2 + 0.6 * torch.rand(2, 3, SIZE, SIZE, dtype=torch.float64)).requires_grad_(True)
    (g,) = torch.autograd.grad(det.attack_loss(x).sum(), x)
    v = torch.randn_like(x)
    h = 1e-6
    with torch.no_grad():
        fd = (det.attack_loss(x + h * v) - det.attack_loss(x - h * v)).sum() / (2 * h)
    assert math.isclose(float(fd), float((g * v).sum()), rel_tol=1e-4, abs_tol=1e-8)


# -- Mahalanobis ---------------------------------------------------------------------------
def test_mahalanobis_distances_match_numpy(world):
    det = world["maha_ood"]
    xi, yi = world["train"]
    tap = FeatureTap(world["kway"], det.layers)
    with torch.no_grad():
        feats = [f.mean((2, 3)).double().numpy() for f in tap(xi)[1]]
        xt = world["test_ood"][:5]
        ft = [f.mean((2, 3)).double().numpy() for f in tap(xt)[1]]
        m = det.layer_scores(xt).double().numpy()
    y = yi.numpy()
    for i, (f, q) in enumerate(zip(feats, ft)):
        mus = np.stack([f[y == c].mean(0) for c in range(K)])
        cen = f - mus[y]
        cov = cen.T @ cen / len(f)
        prec = np.linalg.pinv(cov, rcond=1e-6, hermitian=True)
        d = np.stack([np.einsum("bd,de,be->b", q - mu, prec, q - mu) for mu in mus], 1)
        np.testing.assert_allclose(m[:, i], -d.min(1), rtol=2e-3)
        np.testing.assert_allclose(det.precision(i).double().numpy(), prec, rtol=1e-3, atol=1e-3 * np.abs(prec).max())


def test_mahalanobis_sign_chain_end_to_end(world):
    """OOD is the positive class of the regression; score = its OOD logit; the default
    attack_loss is -score (non-saturating), "logistic" is -log P(OOD) (eq. 116);
    maximizing either lowers the score."""
    det = Mahalanobis(world["kway"], attack_objective="logistic")
    det.load_state_dict(world["maha_ood"].state_dict())
    det.lr_ = world["maha_ood"].lr_
    x = torch.cat([world["test_id"][:16], world["test_ood"][:16]])
    with torch.no_grad():
        m = det.layer_scores(x).double().numpy()
        score = det.score(x).double().numpy()
        loss = det.attack_loss(x).double().numpy()
    assert list(det.lr_.classes_) == [0.0, 1.0]
    np.testing.assert_allclose(score, det.lr_.decision_function(m), rtol=1e-4, atol=1e-3)
    p_ood = det.lr_.predict_proba(m)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-score)), p_ood, atol=1e-4)
    np.testing.assert_allclose(loss, -np.log(p_ood), rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(world["maha_ood"].attack_loss(x).double().numpy(), -score, rtol=1e-6)
    assert score[16:].mean() > score[:16].mean()  # OOD images get larger OOD logits
    assert (m[:16].mean(0) > m[16:].mean(0)).all()  # M_l is a confidence: higher for ID


def test_mahalanobis_fgsm_noise_fit_and_saturation(world):
    """No OOD data: FGSM-perturbed ID images are the negatives (paper B.3); the noise grid
    picks a value; far-OOD inputs saturate eq. 116 and the "logit" objective fixes it."""
    xi, yi = world["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaturationWarning)
        det = Mahalanobis(world["kway"], num_classes=K, attack_objective="logistic", check_saturation=False).fit(
            [(xi[:128], yi[:128])], lr_samples=64, noise_grid=[0.0, 0.002])
    assert det.noise in (0.0, 0.002)
    assert _auroc(det, world["test_id"], world["test_ood"]) > 0.9
    x = world["test_ood"][:8].clone().requires_grad_(True)
    logit = Mahalanobis(world["kway"], noise=det.noise, attack_objective="logit")
    logit.load_state_dict(det.state_dict())
    (g_logit,) = torch.autograd.grad(logit.attack_loss(x).sum(), x)
    (g_paper,) = torch.autograd.grad(det.attack_loss(x).sum(), x)
    assert (g_logit.flatten(1).abs().sum(1) > 0).all()
    # OOD logits of ~200 here: eq. 116 = softplus(-d) underflows, its float32 gradient is 0
    assert (det.score(x) > 100).all() and (g_paper == 0).all()
    # where eq. 116 is not saturated (the OOD-fitted detector, d ~ 10), both objectives give
    # the same ascent direction
    paper = Mahalanobis(world["kway"], attack_objective="logistic")
    paper.load_state_dict(world["maha_ood"].state_dict())
    logit2 = world["maha_ood"]
    (g1,) = torch.autograd.grad(paper.attack_loss(x).sum(), x)
    (g2,) = torch.autograd.grad(logit2.attack_loss(x).sum(), x)
    assert (g1.flatten(1).abs().sum(1) > 0).all()
    assert torch.equal(g1.sign(), g2.sign())


def test_mahalanobis_noise_preprocessing_is_differentiable(world):
    det = world["maha_ood"]
    noisy = Mahalanobis(world["kway"], noise=0.01)
    noisy.load_state_dict(det.state_dict())
    assert noisy.noise == 0.0  # loading restores the fitted noise ...
    noisy.noise = 0.01  # ... which can be changed afterwards
    x = world["test_id"][:8].clone().requires_grad_(True)
    with torch.no_grad():
        assert not torch.allclose(noisy.layer_scores(x), det.layer_scores(x))
        # Lee et al.'s step moves the input towards its closest class: confidence goes up
        assert (noisy.layer_scores(x) >= det.layer_scores(x) - 1e-3).float().mean() > 0.8
    (g,) = torch.autograd.grad(noisy.attack_loss(x).sum(), x)
    assert torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).all()


def test_mahalanobis_state_dict_round_trip(world):
    det = world["maha_ood"]
    fresh = Mahalanobis(world["kway"], layers=det.layers)
    with pytest.raises(NotFittedError, match="fit"):
        fresh.score(world["test_id"][:2])
    fresh.load_state_dict(det.state_dict())
    assert fresh.fitted
    # through a file, loaded safely
    import io

    buf = io.BytesIO()
    torch.save(det.state_dict(), buf)
    buf.seek(0)
    fresh = Mahalanobis(world["kway"], noise=0.5)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.noise == det.noise
    with pytest.raises(ValueError, match="same `layers`"):
        Mahalanobis(world["kway"], layers=det.layers[:1]).load_state_dict(det.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.score(world["test_ood"][:4]), det.score(world["test_ood"][:4]))


def test_mahalanobis_fit_restores_modes_and_leaves_no_grads(world):
    net = world["kway"]
    xi, yi = world["train"]
    det = Mahalanobis(net, attack_objective="logistic")
    det.train()
    net.model.fc.train()
    modes = {n: m.training for n, m in det.named_modules()}
    # bare images: classes from the classifier's predictions; some FGSM negatives are far
    # enough out that eq. 116 saturates, and fit says so
    with pytest.warns(SaturationWarning, match="attack_objective='logit'"):
        det.fit([xi[:64]], lr_samples=32)
    assert {n: m.training for n, m in det.named_modules()} == modes
    net.eval()
    assert all(p.grad is None for p in net.parameters())


def test_mahalanobis_errors(world):
    net = world["kway"]
    det = Mahalanobis(net)
    with pytest.raises(NotFittedError, match="fit\\(id_loader\\)"):
        det.score(world["test_id"][:2])
    with pytest.raises(ValueError, match="not fitted"):  # NotFittedError is a ValueError
        det.attack_loss(world["test_id"][:2])
    xi, yi = world["train"]
    with pytest.raises(ValueError, match="no images of classes"):
        det.fit([(xi[yi < 2][:32], yi[yi < 2][:32])])
    with pytest.raises(ValueError, match="layers"):
        Mahalanobis(net, layers=["nope"])
    with pytest.raises(ValueError, match="id_loader"):
        det.fit([(xi[:8] * 2, yi[:8])])
    with pytest.raises(ValueError, match="attack_objective"):
        Mahalanobis(net, attack_objective="eq116")


# -- adapters -------------------------------------------------------------------------------
def test_as_detector_dispatch(tiny_kway, tiny_kplus1, images):
    assert type(as_detector(tiny_kway)) is MSP
    assert type(as_detector(tiny_kplus1)) is RejectClass
    k3 = with_reject_head(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3), 10, num_reject=3)
    assert type(as_detector(k3)) is RejectSum
    msp = MSP(tiny_kway)
    assert as_detector(msp) is msp
    with pytest.raises(ValueError, match="already a detector"):
        as_detector(msp, objective=O.uniform_ce)
    with pytest.raises(TypeError, match="ScoreDetector"):
        as_detector(lambda x: x)
    det = as_detector(tiny_kplus1, objective=O.reject_nll)  # takes num_classes: gets K
    assert isinstance(det, ObjectiveDetector)
    with torch.no_grad():
        torch.testing.assert_close(det.attack_loss(images), O.reject_nll(tiny_kplus1(images), 10))
        torch.testing.assert_close(det.score(images), -det.attack_loss(images))
        d2 = as_detector(tiny_kway, objective=lambda z: z[:, 0])  # logits-only objective
        torch.testing.assert_close(d2.attack_loss(images), tiny_kway(images)[:, 0])
        torch.testing.assert_close(as_detector(tiny_kway, "neg_energy").attack_loss(images),
                                   -O.energy(tiny_kway(images)))
    with pytest.raises(ValueError, match="neg_energy"):
        as_detector(tiny_kway, objective=O.energy)
    with pytest.raises(ValueError, match="one value per image"):
        as_detector(tiny_kway, objective=lambda z: z).attack_loss(images)


def test_score_detector(tiny_kway, images):
    """A third-party score (pytorch-ood style: outlier score, higher = more OOD)."""
    class ThirdParty(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return -self.model(x).logsumexp(1)

    fn = ThirdParty(tiny_kway)
    det = ScoreDetector(fn, model=tiny_kway)
    x = images.clone().requires_grad_(True)
    torch.testing.assert_close(det.score(x), fn(x))
    (g,) = torch.autograd.grad(det.attack_loss(x).sum(), x)
    (g_ref,) = torch.autograd.grad(fn(x).sum(), x)
    torch.testing.assert_close(g, -g_ref)
    det.train()
    assert fn.training  # a Module score_fn is a submodule
    det.eval()
    assert det.classify(images).shape == (8, 10)
    custom = ScoreDetector(fn, attack_loss_fn=lambda x: 2 * fn(x))
    torch.testing.assert_close(custom.attack_loss(images), 2 * fn(images))
    with pytest.raises(NotImplementedError, match="model"):
        custom.classify(images)
    with pytest.raises(ValueError, match="NaN"):
        ScoreDetector(lambda x: torch.full((x.shape[0],), float("nan"))).score(images)
    with pytest.raises(ValueError, match="one score per image"):
        ScoreDetector(lambda x: x.sum()).score(images)
    with pytest.raises(TypeError, match="score_fn"):
        ScoreDetector(3)


def test_third_party_detector_subclass_gets_internal_path(tiny_kway, images):
    class Mine(Detector):
        def score(self, x):
            return self.model(x).std(1)

    det = Mine(tiny_kway, 10)
    with torch.no_grad():
        torch.testing.assert_close(det._score(images), det.score(images))
        torch.testing.assert_close(det._attack_loss(images), -det.score(images))


# -- errors ---------------------------------------------------------------------------------
def test_kway_model_to_reject_detectors_errors(tiny_kway):
    with pytest.raises(ValueError, match="with_reject_head"):
        RejectClass(tiny_kway)
    with pytest.raises(ValueError, match="with_reject_head"):
        RejectSum(tiny_kway)
    with pytest.raises(TypeError, match="nn.Module"):
        MSP(lambda x: x)
    with pytest.raises(ValueError, match="temperature"):
        ODIN(tiny_kway, temperature=0)
    with pytest.raises(ValueError, match="epsilon"):
        ODIN(tiny_kway, epsilon=-1e-3)


@pytest.mark.parametrize("make", [MSP, ODIN, Energy, lambda m: ObjectiveDetector(m, "uniform_ce")])
def test_bad_images_error(tiny_kway, images, make):
    det = make(tiny_kway)
    for method in (det.score, det.attack_loss, det.classify):
        with pytest.raises(ValueError, match="\\[0, 1\\]"):
            method(images * 3)
        with pytest.raises(ValueError, match="rank 4"):
            method(images[0])
        with pytest.raises(TypeError, match="floating"):
            method((images * 255).to(torch.uint8))
        bad = images.clone()
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            method(bad)


def test_preprocessing_detectors_work_under_no_grad_and_inference_mode(world):
    x = world["test_ood"][:4]
    for det in (ODIN(world["kway"], epsilon=0.01), world["maha_ood"]):
        ref = det.score(x).detach()
        noisy = Mahalanobis(world["kway"], noise=0.01) if isinstance(det, Mahalanobis) else det
        if noisy is not det:
            noisy.load_state_dict(det.state_dict())
            noisy.noise = 0.01
            ref = noisy.score(x).detach()
        with torch.no_grad():
            torch.testing.assert_close(noisy.score(x), ref)
        with torch.inference_mode():
            torch.testing.assert_close(noisy.score(x.clone()), ref)
        torch.testing.assert_close(noisy.predict(x), ref)


# -- Mahalanobis: the non-saturating objective and the saturation check on attacked inputs (#12)
@pytest.fixture(scope="module")
def maha_fgsm(world):
    """Fitted on FGSM negatives (no OOD data): uniform-noise OOD images get OOD logits ~200,
    where eq. 116 is saturated."""
    xi, yi = world["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SaturationWarning)
        return Mahalanobis(world["kway"], num_classes=K).fit([(xi[:128], yi[:128])], lr_samples=64)


def test_mahalanobis_default_objective_moves_pgd_where_eq116_does_not(world, maha_fgsm):
    from atom_plugin.attacks import OODPGD

    x = world["test_ood"][:16]
    paper = Mahalanobis(world["kway"], attack_objective="logistic", check_saturation=False)
    paper.load_state_dict(maha_fgsm.state_dict())
    with torch.no_grad():
        s0 = maha_fgsm.score(x)
    assert (s0 > 110).all()  # saturated range of eq. 116
    adv_default = OODPGD(maha_fgsm, eps=8 / 255, alpha=2 / 255, steps=5, seed=0)(x)
    adv_paper = OODPGD(paper, eps=8 / 255, alpha=2 / 255, steps=5, seed=0)(x)
    with torch.no_grad():
        s_default, s_paper = maha_fgsm.score(adv_default), maha_fgsm.score(adv_paper)
    assert (s_default < s0 - 1.0).all()  # every image's OOD logit drops
    torch.testing.assert_close(s_paper, s0)  # zero gradient: PGD keeps the clean images
    # the reported score is the paper's logistic detector in both cases
    torch.testing.assert_close(paper.score(x), maha_fgsm.score(x))


def test_mahalanobis_warns_on_saturated_attacked_inputs(world, maha_fgsm):
    from atom_plugin.attacks import OODPGD

    paper = Mahalanobis(world["kway"], attack_objective="logistic")
    paper.load_state_dict(maha_fgsm.state_dict())
    with pytest.warns(SaturationWarning, match="inputs being attacked"):
        OODPGD(paper, eps=8 / 255, alpha=2 / 255, steps=2, seed=0)(world["test_ood"][:8])
    # ID inputs (OOD logit small): gradient exists, no warning; the default objective never warns
    paper._objective_calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        paper.attack_loss(world["test_id"][:8])
        maha_fgsm.attack_loss(world["test_ood"][:8])
        OODPGD(maha_fgsm, eps=8 / 255, alpha=2 / 255, steps=2, seed=0)(world["test_ood"][:8])


def test_mahalanobis_fit_checks_every_batch_and_is_short(world):
    import inspect

    xi, yi = world["train"]
    bad_nan = xi[64:96].clone()
    bad_nan[0, 0, 0, 0] = float("nan")
    det = Mahalanobis(world["kway"])
    with pytest.raises(ValueError, match="id_loader batch 1` contains NaN"):
        det.fit([(xi[:64], yi[:64]), (bad_nan, yi[64:96])])
    with pytest.raises(ValueError, match=r"id_loader batch 2` must have values in \[0, 1\]"):
        det.fit([(xi[:32], yi[:32]), (xi[32:64], yi[32:64]), (xi[64:96] + 1.5, yi[64:96])])
    with pytest.raises(ValueError, match="id_loader` batch 1 has images of shape"):
        det.fit([(xi[:64], yi[:64]), (F.interpolate(xi[64:96], size=4), yi[64:96])])
    assert len(inspect.getsource(Mahalanobis.fit).splitlines()) <= 80
