"""OODSquare: score-only L-inf Square Attack on OOD detectors (threat model, never worse than
the input, seeds, query budget, early exit, a known optimum, black-box detectors)."""
from __future__ import annotations

import pytest
import torch

from atom_plugin.attacks import CompositionalAttack, CorruptionAttack, OODPGD, OODSquare, attack_info
from atom_plugin._utils import eval_mode
from atom_plugin.attacks.ood_square import square_p_schedule
from atom_plugin.detectors import RejectClass, ScoreDetector


pytestmark = pytest.mark.usefixtures("one_thread")


def _score(det, x):
    with torch.no_grad(), eval_mode(det):
        return det.score(x)


@pytest.mark.parametrize("target", ["ood", "in"])
@pytest.mark.parametrize("loss", ["score", "attack_loss"])
@pytest.mark.parametrize("eps", [0.0, 1 / 255, 8 / 255, 0.5])
def test_ball_range_never_worse_model_state(tiny_kplus1, images, target, loss, eps):
    det = RejectClass(tiny_kplus1)
    tiny_kplus1.train()  # the caller's model in train mode: the attack must use eval and restore
    x = images[:4].clone()
    x[0, :, :4] = 0.0
    x[1, :, :4] = 1.0
    sd = {k: v.clone() for k, v in tiny_kplus1.state_dict().items()}
    atk = OODSquare(det, eps=eps, n_queries=30, p_init=0.3, loss=loss, target=target, seed=1)
    adv = atk(x)
    assert all(m.training for m in tiny_kplus1.modules())  # caller's mode restored
    assert all(torch.equal(v, sd[k]) for k, v in tiny_kplus1.state_dict().items())
    assert all(p.grad is None for p in tiny_kplus1.parameters())
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    before, after = _score(det, x), _score(det, adv)
    if target == "ood":
        assert torch.all(after <= before + 1e-7)
    else:
        assert torch.all(after >= before - 1e-7)
    torch.testing.assert_close(atk.last_score, after, atol=1e-6, rtol=1e-5)
    with torch.no_grad(), eval_mode(det):
        torch.testing.assert_close(atk.last_objective, det.attack_loss(adv), atol=1e-5, rtol=1e-5)
    if eps == 0:
        assert torch.equal(adv, x)
    assert torch.all(atk.last_queries == 30)


def test_seeded_and_score_only(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    calls = []

    def score_fn(x):  # records whether autograd could be used
        calls.append((torch.is_grad_enabled(), x.requires_grad))
        return det._score(x)

    bb = ScoreDetector(score_fn)
    a, b = OODSquare(bb, n_queries=20, seed=4), OODSquare(bb, n_queries=20, seed=4)
    out1, out2 = a(images), b(images)
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, OODSquare(bb, n_queries=20, seed=5)(images))
    assert calls and not any(g or r for g, r in calls)  # only no-grad queries, never a gradient
    assert a.last_cost["backwards"] == 0
    assert a.last_cost["queries"] == 8 * 20
    # per-image draws: a sub-batch gives the same images
    torch.testing.assert_close(OODSquare(bb, n_queries=20, seed=4)(images[:3]), out1[:3], atol=1e-6, rtol=0)


def test_reaches_a_known_optimum():
    """A linear score s(x) = <w, x>: the L-inf optimum is x - eps * sign(w) (clipped).  With a
    thousand queries Square closes most of the gap (an independent reference)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 12, 12, generator=g)
    det = ScoreDetector(lambda x: (x * w).flatten(1).sum(1))
    x = 0.2 + 0.6 * torch.rand(4, 3, 12, 12, generator=g)
    eps = 0.05
    opt = (x - eps * w.sign()).clamp(0, 1)
    best_gain = _score(det, x) - _score(det, opt)
    gains = []
    for n in (100, 1000):
        adv = OODSquare(det, eps=eps, n_queries=n, p_init=0.3, seed=0)(x)
        gains.append(_score(det, x) - _score(det, adv))
        assert torch.all(gains[-1] <= best_gain + 1e-4)
    assert torch.all(gains[1] >= 0.75 * best_gain), (gains[1] / best_gain)  # measured 0.85 of the optimum
    assert torch.all(gains[1] > gains[0])


def test_p_schedule_matches_the_paper():
    # paper / reference code: p_init halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000
    ref = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 201: 8, 501: 16, 1001: 32, 2001: 64, 4001: 128, 6001: 256, 8001: 512,
           9999: 512}
    for it, div in ref.items():
        assert square_p_schedule(0.8, it, 10000) == pytest.approx(0.8 / div), it
    assert square_p_schedule(0.8, 2, 1000) == pytest.approx(0.4)  # rescaled to the budget (2/1000 = 20/10000)


def test_early_exit_and_query_budget(trained_small):
    det, x = trained_small["reject"], trained_small["x_ood"][:24]
    thr = torch.quantile(_score(det, x), 0.25).item()  # a quarter accepted before the attack
    full = OODSquare(det, n_queries=150, p_init=0.8, threshold=thr, seed=0)
    es = OODSquare(det, n_queries=150, p_init=0.8, threshold=thr, early_stop=True, seed=0)
    adv_f, adv_e = full(x), es(x)
    acc_f, acc_e = _score(det, adv_f) <= thr, _score(det, adv_e) <= thr
    assert torch.equal(acc_f, acc_e) and torch.equal(es.last_success, acc_e)
    clean_acc = _score(det, x) <= thr
    assert int(acc_f.sum()) > int(clean_acc.sum())  # it finds accepted points
    assert torch.all(es.last_queries <= 150) and torch.all(full.last_queries == 150)
    assert torch.all(es.last_queries[acc_e] < 150)  # accepted images stopped querying
    assert es.last_cost["forwards"] < full.last_cost["forwards"]


def test_black_box_detector_and_compositional(trained_small):
    det = trained_small["reject"]
    x = trained_small["x_ood"][:8]
    bb = ScoreDetector(lambda z: det._score(z).detach())  # no gradient at all
    with pytest.raises(ValueError, match="differentiable"):
        OODPGD(bb, steps=2)(x)
    sq = OODSquare(bb, n_queries=60, p_init=0.8, seed=0)
    adv = sq(x)
    assert torch.all(_score(det, adv) <= _score(det, x)) and torch.any(_score(det, adv) < _score(det, x) - 1e-4)
    comp = CompositionalAttack(bb, corruption_attack=CorruptionAttack(bb, ["gaussian_noise", "contrast"], [3]),
                               linf_attack=OODSquare(bb, n_queries=40, p_init=0.8, seed=0))
    out = comp(x)
    assert (out - comp.last_center).abs().max() <= 8 / 255 + 1e-6
    assert torch.all(_score(bb, out) <= _score(bb, x) + 1e-7)
    info = attack_info("square")
    assert info.threat == "linf" and info.gradient is False and info.builder is OODSquare


def test_bad_budget_and_arguments(tiny_kplus1):
    det = RejectClass(tiny_kplus1)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="n_queries"):
            OODSquare(det, n_queries=bad)
    with pytest.raises(TypeError, match="n_queries"):
        OODSquare(det, n_queries=10.5)
    with pytest.raises(ValueError, match="p_init"):
        OODSquare(det, p_init=0.0)
    with pytest.raises(ValueError, match="loss"):
        OODSquare(det, loss="margin")
    with pytest.raises(ValueError, match="eps"):
        OODSquare(det, eps=1.5)
