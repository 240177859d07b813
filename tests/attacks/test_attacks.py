"""OOD attacks (atom_plugin.attacks): threat model, best-of guarantee, model state,
torchattacks integration (MultiAttack, normalization), a real effect on a trained detector,
APGD vs PGD at equal budget, and input errors."""
from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn as nn
import torchattacks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atom_plugin.attacks import OODAPGD, OODFGSM, OODPGD, DetectorDecision, OODAttack, OODMultiAttack
from atom_plugin.attacks.base import BestOf
from atom_plugin.attacks.ood_apgd import apgd_checkpoints
from atom_plugin.detectors import MSP, RejectClass, ScoreDetector
from atom_plugin.models import Normalize, SmallCNN, with_reject_head
from atom_plugin.objectives import reject_nll

TOL = 1e-6  # float slack for "inside the eps-ball"


pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers -------------------------------------------------------------------------------
def _state(model: nn.Module):
    return ([(m, m.training) for m in model.modules()],
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def _assert_state(model: nn.Module, state) -> None:
    modes, sd, grads = state
    assert all(m.training == flag for m, flag in modes), "training flags changed"
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), f"{k} changed (parameter or BatchNorm buffer)"
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g)), ".grad changed"


@torch.no_grad()
def _obj(det, x):
    was = [(m, m.training) for m in det.modules()]
    det.eval()
    out = det.attack_loss(x)
    for m, flag in was:
        m.training = flag
    return out


@pytest.fixture(scope="module")
def trained(trained_small):
    """The (3+1)-way SmallCNN of ``conftest.trained_small`` (trained a few seconds on blobs
    against uniform noise) with its reject-class detector and the 95%-TPR threshold."""
    t = trained_small
    return dict(model=t["model"], det=t["reject"], x_id=t["x_id"], thr=t["thr_reject"], acc=t["acc"],
                x_ood=t["x_ood"])


# -- property sweep: threat model, best-of, model state ------------------------------------------
ATTACKS = {
    "pgd": lambda det, eps, steps, restarts, target, r, seed: OODPGD(
        det, eps=eps, alpha=max(eps / 4, 1 / 255), steps=steps, restarts=restarts, target=target,
        round_to_255=r, seed=seed),
    "apgd": lambda det, eps, steps, restarts, target, r, seed: OODAPGD(
        det, eps=eps, steps=steps, restarts=restarts, target=target, round_to_255=r, seed=seed),
    "fgsm": lambda det, eps, steps, restarts, target, r, seed: OODFGSM(det, eps=eps, target=target, round_to_255=r),
    "pgd_nostart": lambda det, eps, steps, restarts, target, r, seed: OODPGD(
        det, eps=eps, alpha=eps / 2 + 1e-3, steps=steps, random_start=False, target=target, round_to_255=r),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(sorted(ATTACKS)),
    eps=st.sampled_from([0.0, 0.5 / 255, 1 / 255, 8 / 255, 0.3]),
    steps=st.integers(1, 4),
    restarts=st.integers(1, 2),
    target=st.sampled_from(["ood", "in"]),
    round_to_255=st.booleans(),
    eight_bit=st.booleans(),
    seed=st.integers(0, 2 ** 16),
)
def test_property_ball_range_bestof_and_model_state(tiny_kplus1, kind, eps, steps, restarts, target,
                                                    round_to_255, eight_bit, seed):
    model = tiny_kplus1.train()            # caller in train mode: the attack must use eval and restore
    model.model.features[1].eval()   # ... and a mixed state must come back exactly
    det = RejectClass(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, 16, 16, generator=g)
    x[0, 0, :4] = 0.0
    x[0, 1, :4] = 1.0                      # pixels on both bounds of [0, 1]
    if eight_bit:
        x = torch.round(x * 255) / 255
    if kind == "pgd_nostart":
        restarts = 1
    state = _state(model)
    atk = ATTACKS[kind](det, eps, steps, restarts, target, round_to_255, seed)
    adv = atk(x)
    _assert_state(model, state)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert (adv - x).abs().max() <= eps + TOL
    assert adv.min() >= 0 and adv.max() <= 1
    before, after = _obj(det, x), _obj(det, adv)
    if target == "ood":
        assert torch.all(after >= before), (after - before)
    else:
        assert torch.all(after <= before), (after - before)
    torch.testing.assert_close(atk.last_objective, after, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(atk.last_clean_objective, before, atol=1e-5, rtol=1e-5)
    if round_to_255 and eight_bit:
        assert torch.allclose(adv * 255, torch.round(adv * 255), atol=1e-3)
    if eps == 0:
        assert torch.equal(adv, x)


def test_pgd_improves_and_labels_are_optional(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    a = OODPGD(det, steps=5, seed=3)
    adv_none = a(images)
    adv_lab = a(images, torch.arange(8))
    assert torch.equal(adv_none, adv_lab)  # labels are ignored; seed makes calls reproducible
    assert torch.all(a.last_objective > a.last_clean_objective)  # a real ascent, not just "no worse"
    adv_other = OODPGD(det, steps=5, seed=4)(images)
    assert not torch.equal(adv_none, adv_other)


def test_fgsm_textbook_and_keep_best(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    x = images.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(det.attack_loss(x).sum(), x)
    ref = (images + 4 / 255 * g.sign()).clamp(0, 1)
    torch.testing.assert_close(OODFGSM(det, eps=4 / 255, keep_best=False)(images), ref, atol=1e-7, rtol=0)
    adv = OODFGSM(det, eps=4 / 255)(images)
    keep = _obj(det, adv) >= _obj(det, images)
    assert torch.all(keep)


def test_pgd_under_no_grad_and_existing_grads(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    for p in tiny_kplus1.parameters():
        p.grad = torch.ones_like(p)
    state = _state(tiny_kplus1)
    with torch.no_grad():  # e.g. called from an evaluation loop
        adv = OODAPGD(det, steps=3, seed=0)(images)
    _assert_state(tiny_kplus1, state)
    assert torch.all(_obj(det, adv) > _obj(det, images))


def test_batchnorm_training_mode_does_not_touch_running_stats(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    atk = OODPGD(det, steps=2, seed=0)
    atk.set_model_training_mode(model_training=True, batchnorm_training=True)
    state = _state(tiny_kplus1)
    atk(images)
    _assert_state(tiny_kplus1, state)


def test_model_plus_objective_equals_detector(tiny_kplus1, images):
    a = OODPGD(tiny_kplus1, objective=reject_nll, steps=3, seed=1)(images)
    b = OODPGD(RejectClass(tiny_kplus1), steps=3, seed=1)(images)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_torchattacks_normalization_convention(images):
    """A model that expects normalized inputs + set_normalization_used: same attack as the
    Normalize-wrapped model, in normalized coordinates."""
    torch.manual_seed(0)
    raw = with_reject_head(SmallCNN(10, width=4), 10).eval()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    wrapped = Normalize(raw, mean, std)
    wrapped.ood_num_classes, wrapped.ood_num_reject = 10, 1
    ref = OODPGD(RejectClass(wrapped), steps=3, seed=0)(images)
    atk = OODPGD(RejectClass(raw), steps=3, seed=0)
    atk.set_normalization_used(mean, std)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = atk((images - m) / s)
    torch.testing.assert_close(out * s + m, ref, atol=1e-5, rtol=0)


def test_device_and_dtype_follow_input(tiny_kplus1, images):
    det = RejectClass(tiny_kplus1)
    atk = OODAPGD(det, steps=2, seed=0)
    adv = atk(images)
    assert adv.device == images.device and adv.dtype == images.dtype
    assert atk.last_objective.device == images.device
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        det.cuda()
        assert OODAPGD(det, steps=2, seed=0)(images.cuda()).is_cuda


def _step_loop_functions():
    """Everything an attack step or a training step runs: the attacks' loops and helpers,
    every detector's bare score / objective, the training recipes' perturbations."""
    from atom_plugin.detectors import MSP, ODIN, Energy, Mahalanobis, ObjectiveDetector, RejectClass, RejectSum
    from atom_plugin.detectors.score_fn import ScoreDetector
    from atom_plugin.training import methods

    fns = [OODPGD.forward, OODAPGD._run, OODFGSM.forward, OODAttack._keep_best, OODAttack._value_and_grad,
           OODAttack._value, OODAttack._signed_objective, OODAttack.objective, OODAttack._random_start,
           OODAttack._project, OODAttack._round, OODAttack._eval, OODAttack._success, OODAttack._image_uniform,
           OODAttack._random_start_images, BestOf.update, methods.pgd_maximize, ODIN.preprocess, ODIN._tempered,
           Mahalanobis._layer_scores, Mahalanobis._dists_at, Mahalanobis._min_dist]
    for cls in (MSP, ODIN, Energy, Mahalanobis, RejectClass, RejectSum, ScoreDetector, ObjectiveDetector):
        fns += [cls.__dict__[n] for n in ("_score", "_attack_loss") if n in cls.__dict__]
    for recipe in methods.RECIPES.values():
        fns += [recipe.__dict__[n] for n in ("perturb", "outlier_loss", "loss") if n in recipe.__dict__]
    return fns


@pytest.mark.parametrize("fn", _step_loop_functions(), ids=lambda f: getattr(f, "__qualname__", str(f)))
def test_no_host_device_sync_or_cuda_in_step_loops(fn):
    src = inspect.getsource(getattr(fn, "fget", fn))
    for bad in (".item(", ".cpu(", ".tolist(", ".cuda(", ".numpy("):
        assert bad not in src, f"{fn.__qualname__} contains {bad}"
    for builtin in ("float", "bool", "int"):  # float(tensor) etc. sync; x.float() (a cast) does not
        assert not re.search(rf"(?<![\w.]){builtin}\(", src), f"{fn.__qualname__} calls {builtin}()"


def test_apgd_checkpoints_schedule():
    assert apgd_checkpoints(1) == []
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # Croce & Hein, 0.22 / -0.03 / 0.06
    assert all(0 < c < 40 for c in apgd_checkpoints(40))


# -- trained detector: a real effect --------------------------------------------------------------
def test_attack_makes_detector_accept_ood_it_rejected(trained):
    det, thr, x = trained["det"], trained["thr"], trained["x_ood"]
    assert trained["acc"] > 0.95
    state = _state(trained["model"])
    with torch.no_grad():
        before = (det.score(x) <= thr).sum().item()
    adv = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)(x)
    with torch.no_grad():
        after = (det.score(adv) <= thr).sum().item()
    _assert_state(trained["model"], state)
    assert before <= 8, before            # the detector rejects (almost) all of these OOD images
    assert after >= before + 16, (before, after)   # L-inf 8/255 makes a quarter of them pass


def test_in_attack_makes_detector_reject_id(trained):
    det, thr, x = trained["det"], trained["thr"], trained["x_id"]
    with torch.no_grad():
        rejected_before = (det.score(x) > thr).sum().item()
    adv = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, target="in", seed=0)(x)
    with torch.no_grad():
        rejected_after = (det.score(adv) > thr).sum().item()
    assert rejected_after >= rejected_before + 16, (rejected_before, rejected_after)


def test_apgd_at_least_as_strong_as_pgd_at_equal_budget(trained):
    """Same number of gradient evaluations and the paper's evaluation step size 1/255 for
    PGD: APGD's adaptive step reaches a higher mean objective, for every budget and seed
    tried (margins on this model: +0.57 at 5 steps, +0.25 at 10, +0.04 at 20)."""
    det, x = trained["det"], trained["x_ood"][:32]
    for steps in (5, 10):
        for seed in (0, 1):
            pgd, apgd = OODPGD(det, steps=steps, alpha=1 / 255, seed=seed), OODAPGD(det, steps=steps, seed=seed)
            pgd(x)
            apgd(x)
            assert apgd.last_objective.mean() >= pgd.last_objective.mean(), (steps, seed)


def test_apgd_at_least_as_strong_as_pgd_at_the_default_budget(trained):
    """40 gradient evaluations (the paper's evaluation budget), against PGD with the
    paper's step 1/255 and with a larger fixed step 2/255: APGD's mean objective is at
    least as high, and it is ahead or level on most images."""
    det, x = trained["det"], trained["x_ood"][:32]
    apgd = OODAPGD(det, steps=40, seed=0)
    apgd(x)
    for alpha in (1 / 255, 2 / 255):
        pgd = OODPGD(det, steps=40, alpha=alpha, seed=0)
        pgd(x)
        assert apgd.last_objective.mean() >= pgd.last_objective.mean(), alpha
        assert (apgd.last_objective >= pgd.last_objective - 1e-4).float().mean() >= 0.5, alpha


# -- MultiAttack ------------------------------------------------------------------------------------
def test_torchattacks_multiattack(trained):
    det, thr, x = trained["det"], trained["thr"], trained["x_ood"]
    a1, a2 = OODFGSM(det, eps=8 / 255), OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)
    assert a1.model is a2.model  # attacks on one detector share its DetectorDecision
    multi = torchattacks.MultiAttack([a1, a2])
    labels = torch.zeros(len(x), dtype=torch.long)  # 0 = OOD input
    with pytest.raises(ValueError, match="set_threshold"):
        multi(x, labels)
    a1.set_threshold(thr)
    assert a2.model.threshold == thr
    out = multi(x, labels)
    # MultiAttack keeps, per sample, the first attack whose output the detector accepts
    # ("misclassified" as ID), runs the next attack only on the rest, else keeps the clean image
    fgsm = OODFGSM(det, eps=8 / 255)(x)
    with torch.no_grad():
        ok1 = det.score(fgsm) <= thr
    rest = x[~ok1]
    pgd = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=10, seed=0)(rest)  # same seed, same subset
    with torch.no_grad():
        ok2 = det.score(pgd) <= thr
    torch.testing.assert_close(out[ok1], fgsm[ok1])
    torch.testing.assert_close(out[~ok1][ok2], pgd[ok2])
    torch.testing.assert_close(out[~ok1][~ok2], rest[~ok2])
    assert ok2.any()  # the second attack adds successes
    # get_logits reads as detection: class 0 = rejected (OOD), 1 = accepted (ID)
    with torch.no_grad():
        pred = a1.get_logits(out).argmax(1)
    assert torch.equal(pred == 1, det.score(out) <= thr)


def test_ood_multiattack_keeps_best_objective(trained, tiny_kplus1, images):
    det, x = trained["det"], trained["x_ood"][:24]
    make = [lambda: OODFGSM(det, eps=8 / 255), lambda: OODPGD(det, steps=5, alpha=2 / 255, seed=1),
            lambda: OODAPGD(det, steps=5, seed=2)]
    singles = []
    for mk in make:
        atk = mk()
        atk(x)
        singles.append(atk.last_objective)
    multi = OODMultiAttack([mk() for mk in make])
    out = multi(x)
    best = torch.stack(singles).max(0).values
    torch.testing.assert_close(multi.last_objective, best)
    torch.testing.assert_close(_obj(det, out), best, atol=1e-5, rtol=1e-5)
    assert set(multi.last_winner.tolist()) <= {-1, 0, 1, 2}
    with pytest.raises(ValueError, match="different detector"):
        OODMultiAttack([OODFGSM(det), OODFGSM(RejectClass(tiny_kplus1))])
    with pytest.raises(ValueError, match="target"):
        OODMultiAttack([OODFGSM(det), OODFGSM(det, target="in")])
    with pytest.raises(TypeError, match="OODAttack"):
        OODMultiAttack([OODFGSM(det), torchattacks.FGSM(trained["model"])])


# -- errors ---------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tiny_kplus1, tiny_kway, images):
    det = RejectClass(tiny_kplus1)
    atk = OODPGD(det, steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        atk(images * 2)
    with pytest.raises(ValueError, match="rank 4"):
        atk(images[0])
    nan = images.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        atk(nan)
    with pytest.raises(ValueError, match="eps"):
        OODPGD(det, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        OODPGD(det, steps=0)
    with pytest.raises(ValueError, match="alpha"):
        OODPGD(det, alpha=0)
    with pytest.raises(ValueError, match="restarts"):
        OODAPGD(det, restarts=0)
    with pytest.raises(ValueError, match="restarts"):
        OODPGD(det, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="target"):
        OODPGD(det, target="out")
    with pytest.raises(TypeError, match="model"):
        OODPGD("not a model")
    # a K-way model given to reject_nll (needs K+1 outputs): the objective says so
    with pytest.raises(ValueError, match="reject|K\\+1|num_classes"):
        OODPGD(tiny_kway, objective=reject_nll, num_classes=10, steps=1)(images)
    # a score that is not differentiable in the input
    blind = ScoreDetector(lambda x: x.detach().mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="differentiable"):
        OODPGD(blind, steps=1)(images)
    # the caller's mode is restored even when the attack raises
    tiny_kplus1.train()
    with pytest.raises(ValueError):
        atk(images * 2)
    assert all(m.training for m in tiny_kplus1.modules())


def test_decision_module_contract(tiny_kway, images):
    det = MSP(tiny_kway)
    dec = DetectorDecision.of(det)
    assert DetectorDecision.of(det) is dec and dec.threshold is None
    assert dec not in list(det.modules())  # not registered as a submodule (no cycle)
    dec.threshold = 0.5
    with torch.no_grad():
        logits = dec(images)
        assert logits.shape == (8, 2)
        assert torch.equal(logits.argmax(1) == 0, det.score(images) > 0.5)
    assert OODPGD(dec).detector is det
