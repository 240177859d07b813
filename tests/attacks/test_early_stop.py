"""Threshold-aware attacks and early stopping: same FPR with and without early stopping for
the same seed, fewer forwards, per-image seeding, cost accounting, errors."""
from __future__ import annotations

import pytest
import torch

from atom_plugin.attacks import OODAPGD, OODFGSM, OODPGD
from atom_plugin.attacks.base import image_seed


pytestmark = pytest.mark.usefixtures("one_thread")


def _accepted(det, x, thr):
    with torch.no_grad():
        return det.score(x) <= thr


MAKERS = {
    "pgd": lambda det, **kw: OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=8, seed=3, **kw),
    "pgd_restarts": lambda det, **kw: OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=4, restarts=2, seed=5, **kw),
    "apgd": lambda det, **kw: OODAPGD(det, eps=8 / 255, steps=8, seed=3, **kw),
    "apgd_restarts": lambda det, **kw: OODAPGD(det, eps=8 / 255, steps=4, restarts=2, seed=5, **kw),
    "apgd_nostart": lambda det, **kw: OODAPGD(det, eps=8 / 255, steps=6, random_start=False, **kw),
    "fgsm": lambda det, **kw: OODFGSM(det, eps=8 / 255, **kw),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("which", ["reject", "msp"])
def test_early_stopping_keeps_the_fpr_and_saves_forwards(trained_small, kind, which):
    det, thr = trained_small[which], trained_small[f"thr_{which}"]
    x = torch.cat([trained_small["x_ood"][:40], trained_small["x_id"][:8]])  # some accepted already
    full = MAKERS[kind](det, threshold=thr)
    es = MAKERS[kind](det, threshold=thr, early_stop=True)
    adv_full, adv_es = full(x), es(x)
    acc_full, acc_es = _accepted(det, adv_full, thr), _accepted(det, adv_es, thr)
    assert torch.equal(acc_full, acc_es), (acc_full.sum(), acc_es.sum())
    assert torch.equal(full.last_success, acc_full) and torch.equal(es.last_success, acc_es)
    n_clean = int(_accepted(det, x, thr).sum())
    assert n_clean >= 6 and int(acc_full.sum()) > n_clean  # the attack does something, some start accepted
    assert es.last_cost["forwards"] < full.last_cost["forwards"]
    assert es.last_cost["backwards"] <= full.last_cost["backwards"]
    # both stay in the ball and in [0, 1]
    for adv in (adv_full, adv_es):
        assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # images that were never accepted followed the same path: identical outputs
    never = ~acc_full
    torch.testing.assert_close(adv_es[never], adv_full[never], atol=1e-6, rtol=0)


def test_without_threshold_reject_class_fpr_matches_early_stopping(trained_small):
    """RejectClass: score = exp(-objective), so the plain best-of (no threshold) already returns
    an accepted point whenever the attack found one: the FPR of the default attack equals the
    early-stopped one."""
    det, thr, x = trained_small["reject"], trained_small["thr_reject"], trained_small["x_ood"]
    plain = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)
    es = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, seed=0, threshold=thr, early_stop=True)
    assert torch.equal(_accepted(det, plain(x), thr), _accepted(det, es(x), thr))
    assert es.last_cost["forwards"] < plain.last_cost["forwards"]


def test_per_image_draws_do_not_depend_on_the_batch(trained_small):
    det, x = trained_small["reject"], trained_small["x_ood"][:6]
    a = OODPGD(det, steps=3, seed=11)
    out_all = a(x)
    out_sub = a(x[:2])
    torch.testing.assert_close(out_sub, out_all[:2], atol=1e-6, rtol=0)
    u = a._image_uniform(x, [0, 1, 2], 0)
    u2 = a._image_uniform(x, [2], 0)
    assert torch.equal(u[2], u2[0]) and not torch.equal(u[0], u[1])
    assert len({image_seed(0, i, s) for i in range(50) for s in range(4)}) == 200


def test_cost_accounting_counts_images(trained_small):
    """Forward / backward counts in images, against the documented formula and against a hook
    that counts the model's calls."""
    det, x = trained_small["reject"], trained_small["x_ood"][:5]
    n = {"f": 0}
    h = trained_small["model"].register_forward_hook(lambda m, i, o: n.__setitem__("f", n["f"] + i[0].shape[0]))
    try:
        atk = OODPGD(det, steps=4, restarts=2, seed=0)
        atk(x)
    finally:
        h.remove()
    assert atk.last_cost == {"forwards": 5 * (1 + 2 * 4), "backwards": 5 * (1 + 2 * 3)}
    assert n["f"] == atk.last_cost["forwards"]


def test_threshold_errors(trained_small):
    det = trained_small["reject"]
    with pytest.raises(ValueError, match="threshold"):
        OODPGD(det, early_stop=True)
    with pytest.raises(ValueError, match="threshold.*finite"):
        OODAPGD(det, threshold=float("nan"))
    with pytest.raises(TypeError, match="early_stop"):
        OODFGSM(det, threshold=0.5, early_stop="yes")
