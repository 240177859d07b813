"""OODAutoAttack: per-image worst point over its components (>= each component alone with the
same budget), threshold handling, winners and cost, black-box detectors, EOT, errors."""
from __future__ import annotations

import pytest
import torch

from atom_plugin._utils import eval_mode
from atom_plugin.attacks import OODAPGD, OODPGD, OODAutoAttack, OODSquare, attack_info, create_attack, margin_objective
from atom_plugin.detectors import MSP, RejectClass, ScoreDetector

KW = dict(version="fast", apgd_steps=5, n_queries=40)


pytestmark = pytest.mark.usefixtures("one_thread")


def _score(det, x):
    with torch.no_grad(), eval_mode(det):
        return det.score(x)


def _alone(det, thr, seed=0):
    """The three components, each run alone with the auto attack's budget."""
    es = dict(threshold=thr, early_stop=thr is not None)
    a = OODAPGD(det, steps=5, seed=seed, **es)
    m = OODAPGD(det, steps=5, seed=seed, **es)
    m._objective_fn = margin_objective(det)[0]
    s = OODSquare(det, n_queries=40, p_init=0.8, seed=seed, **es)
    return {"apgd": a, "apgd-margin": m, "square": s}


@pytest.mark.parametrize("which", ["reject", "msp"])
def test_at_least_as_strong_as_each_component_per_image(trained_small, which):
    det, thr = trained_small[which], trained_small[f"thr_{which}"]
    x = torch.cat([trained_small["x_ood"][:30], trained_small["x_id"][:4]])
    auto = OODAutoAttack(det, threshold=thr, **KW)
    acc_auto = _score(det, auto(x)) <= thr
    assert torch.equal(auto.last_success, acc_auto)
    n_best_single = 0
    for name, atk in _alone(det, thr).items():
        acc = _score(det, atk(x)) <= thr
        assert torch.all(acc_auto | ~acc), name  # every image a component gets accepted, auto does too
        n_best_single = max(n_best_single, int(acc.sum()))
    assert int(acc_auto.sum()) >= n_best_single
    assert int(acc_auto.sum()) > int((_score(det, x) <= thr).sum())
    wins = auto.last_wins
    assert sum(wins.values()) == len(x) and wins["clean"] >= 4  # the accepted ID images are not attacked


def test_without_threshold_keeps_lowest_score(trained_small):
    det, x = trained_small["msp"], trained_small["x_ood"][:16]
    auto = OODAutoAttack(det, **KW)
    adv = auto(x)
    s_auto = _score(det, adv)
    torch.testing.assert_close(auto.last_score, s_auto, atol=1e-6, rtol=1e-5)
    assert torch.all(s_auto <= _score(det, x))
    for name, atk in _alone(det, None).items():
        assert torch.all(s_auto <= _score(det, atk(x)) + 1e-6), name
    # the winner's own output is the returned image
    names = list(auto.components)
    assert set(auto.last_winner.tolist()) <= {-1, 0, 1, 2}
    assert auto.last_cost["backwards"] > 0 and auto.last_cost["queries"] == 16 * 40
    assert set(auto.last_cost["per_attack"]) == set(names)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_threshold_saves_cost(trained_small):
    det, thr = trained_small["reject"], trained_small["thr_reject"]
    x = torch.cat([trained_small["x_ood"][:20], trained_small["x_id"][:8]])
    with_t, without = OODAutoAttack(det, threshold=thr, **KW), OODAutoAttack(det, **KW)
    with_t(x)
    without(x)
    assert with_t.last_cost["forwards"] < without.last_cost["forwards"]
    assert with_t.last_cost["queries"] < without.last_cost["queries"]


def test_margin_objectives(trained_small):
    model = trained_small["model"]
    x = trained_small["x_ood"][:5]
    with torch.no_grad():
        z = model(x)
        fn, _ = margin_objective(RejectClass(model))
        torch.testing.assert_close(fn(x), z[:, :3].max(1).values - z[:, 3])
        fn, _ = margin_objective(MSP(model))
        zs = z[:, :3].sort(1, descending=True).values
        torch.testing.assert_close(fn(x), zs[:, 0] - zs[:, 1])
        sd = ScoreDetector(lambda t: t.mean(dim=(1, 2, 3)))
        fn, name = margin_objective(sd)
        assert name == "-score"
        torch.testing.assert_close(fn(x), -x.mean(dim=(1, 2, 3)))


def test_black_box_detector_gets_square_only(trained_small):
    det = trained_small["reject"]
    bb = ScoreDetector(lambda t: det._score(t).detach())
    auto = OODAutoAttack(bb, **KW)
    x = trained_small["x_ood"][:6]
    adv = auto(x)
    assert auto.last_skipped == ["apgd", "apgd-margin"]
    assert auto.last_cost["backwards"] == 0
    assert torch.all(_score(bb, adv) <= _score(bb, x))
    assert attack_info("auto").threat == "linf"
    assert isinstance(create_attack("auto", det, version="fast"), OODAutoAttack)


def test_rand_version_uses_eot(trained_small):
    det = trained_small["reject"]
    auto = OODAutoAttack(det, version="rand", apgd_steps=3, n_queries=5, eot_iter=4)
    auto(trained_small["x_ood"][:4])
    per = auto.last_cost["per_attack"]
    # APGD-3 with a random start: 3 gradient evaluations (x0, x1, x2) + 1 forward per image, x 4 draws
    assert per["apgd"]["backwards"] == 4 * 3 * 4
    assert OODAutoAttack(det, version="rand").budget["eot_iter"] == 20


def test_bad_inputs(trained_small):
    det = trained_small["reject"]
    with pytest.raises(ValueError, match="threshold"):
        OODAutoAttack(det, threshold=float("nan"))
    with pytest.raises(ValueError, match="version"):
        OODAutoAttack(det, version="plus")
    for eps in (-0.01, 1.5):
        with pytest.raises(ValueError, match="eps"):
            OODAutoAttack(det, eps=eps)
    with pytest.raises(ValueError, match="n_queries"):
        OODAutoAttack(det, n_queries=0)


def test_saturated_mahalanobis_pgd_stuck_autoattack_moves(trained_small):
    """Eq. 116 (softplus of the OOD logit) has an exactly zero float32 gradient once the logit
    exceeds ~104: OODPGD cannot move such images; OODAutoAttack's second objective (the
    logit itself) can, so its points score lower."""
    from torch.utils.data import DataLoader, TensorDataset

    from atom_plugin.detectors import Mahalanobis

    model, x = trained_small["model"], trained_small["x_ood"][:24]
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(64, 3, 16, 16, generator=g)
    det = Mahalanobis(model, attack_objective="logistic", check_saturation=False)
    det.fit(DataLoader(TensorDataset(trained_small["x_id"]), batch_size=32), DataLoader(TensorDataset(noise), batch_size=32))
    with torch.no_grad():  # a sharper logistic (a weakly regularised fit): same ranking, saturated
        det.intercept.sub_(_score(det, trained_small["x_id"]).max())  # ID logits <= 0
        k = 400.0 / _score(det, x).median().clamp_min(1e-3)
        det.coef.mul_(k)
        det.intercept.mul_(k)
    d = _score(det, x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(det.attack_loss(xg).sum(), xg)
    zero = grad.flatten(1).abs().amax(1) == 0
    assert zero.float().mean() >= 0.5 and torch.all(d[zero] > 104)
    fn, name = margin_objective(det)
    assert name.startswith("-score")
    torch.testing.assert_close(fn(x), -d)
    pgd = OODPGD(det, steps=10, seed=0, random_start=False)
    s_pgd = _score(det, pgd(x))
    torch.testing.assert_close(s_pgd[zero], d[zero])  # stuck: zero gradient, no move
    s_auto = _score(det, OODAutoAttack(det, **KW)(x))
    assert torch.all(s_auto <= s_pgd + 1e-3)
    assert (s_auto[zero] < d[zero] - 1.0).float().mean() >= 0.5
