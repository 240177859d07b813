"""The detector contract, for every registered detector (built through the registry on a
tiny trained model): score shape (B,), sign convention (OOD scores higher; the attack
objective points against the score), a nonzero finite input gradient unless declared
black-box, model modes / BN buffers / .grad untouched, the input not modified, scores
independent of the batch composition; bad input: unfitted, wrong fit image size."""
from __future__ import annotations

import warnings

import pytest
import torch

import atom_plugin  # noqa: F401
from atom_plugin.detectors import NotFittedError, create_detector, detector_info, list_detectors
from atom_plugin.metrics import auroc
from atom_plugin.models import with_reject_head

NAMES = list_detectors()
NEW = ["maxlogit", "entropy", "gen", "klmatching", "knn", "vim", "react", "ash", "dice", "rmd"]
KW = {"knn": {"k": 5}}


def _build(name, world):
    model = world["model"]
    if detector_info(name).head != "any":
        torch.manual_seed(0)
        import copy

        model = with_reject_head(copy.deepcopy(model), world["K"]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_detector(name, model, fit_loader=world["loader"], **KW.get(name, {}))


@pytest.fixture(scope="module")
def built(tiny_world):
    return {n: _build(n, tiny_world) for n in NAMES}


def test_new_detectors_are_registered():
    assert set(NEW) <= set(NAMES)
    for n in NEW:
        doc = detector_info(n).builder.__doc__
        assert "Score" in doc and "Attack objective" in doc and ("20" in doc), n  # paper, score, objective


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, {n: m.training for n, m in model.named_modules()})


@pytest.mark.parametrize("name", NAMES)
def test_contract(built, tiny_world, name):
    det = built[name]
    model = det.model
    xi, xo = tiny_world["test_id"], tiny_world["test_ood"]
    x = torch.cat([xi[:4], xo[:4]])
    x0 = x.clone()
    buffers, modes = _state(model)
    s = det.score(x)
    assert s.shape == (8,) and torch.isfinite(s).all()
    # sign: OOD (uniform noise) scores higher than ID on the trained model
    with torch.no_grad():
        si, so = det.score(xi), det.score(xo)
    assert auroc(si.numpy(), so.numpy()) > 0.6, name
    # the attack objective: nonzero finite input gradient, and ascending it lowers the score
    if detector_info(name).differentiable and det.differentiable:
        xg = xo[:8].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(det.attack_loss(xg).sum(), xg)
        assert torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).all(), name
        with torch.no_grad():
            stepped = det.score((xo[:8] + 2e-3 * g.sign()).clamp(0, 1))
            assert (stepped < det.score(xo[:8])).float().mean() >= 0.75, name
    # nothing touched
    assert torch.equal(x, x0)
    b2, m2 = _state(model)
    assert m2 == modes and all(torch.equal(buffers[k], b2[k]) for k in buffers)
    assert all(p.grad is None for p in model.parameters())
    # batch composition: the score of an image does not depend on the rest of the batch
    # (in float64, so BLAS round-off of different batch sizes, which ill-conditioned
    # precision matrices amplify in float32, stays far below the tolerance)
    import copy

    det64 = copy.deepcopy(det).double()
    with torch.no_grad():
        alone = torch.cat([det64.score(x[i: i + 1].double()) for i in range(3)])
        mixed = det64.score(torch.cat([x[:3], xo[8:16], xi[8:12]]).double())[:3]
    torch.testing.assert_close(alone, mixed, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES if detector_info(n).needs_fit])
def test_unfitted_detector_is_refused(tiny_world, name):
    model = tiny_world["model"]
    if detector_info(name).head != "any":
        pytest.skip("no fitted k+r detector")
    det = detector_info(name).builder(model, **KW.get(name, {}))
    with pytest.raises(NotFittedError, match="not fitted"):
        det.score(tiny_world["test_id"][:2])
    with pytest.raises(ValueError, match="must be fitted"):
        create_detector(name, model)


@pytest.mark.parametrize("name", NEW)
def test_fit_loader_with_wrong_image_size(tiny_world, name):
    if not detector_info(name).needs_fit:
        pytest.skip("no fit")
    det = detector_info(name).builder(tiny_world["model"], **KW.get(name, {}))
    (x, y), = tiny_world["loader"][:1]
    small = torch.nn.functional.interpolate(x, size=8)
    with pytest.raises(ValueError, match=r"`loader` batch 1 has images of shape \(3, 8, 8\) but earlier batches had "
                                         r"\(3, 16, 16\)"):
        det.fit([(x, y), (small, y)])
    det.fit(tiny_world["loader"])
    with pytest.raises(ValueError, match=r"fitted on \(3, 16, 16\)"):
        det.score(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="loader batch 0` contains NaN"):
        det.fit([(torch.full_like(x, float("nan")), y)])


def test_bare_methods_have_no_host_sync():
    """What attacks call in their loops (the bare score / objective and their helpers) reads
    no tensor value on the host (same rule as tests/attacks for the other detectors)."""
    import inspect
    import re

    from atom_plugin.detectors import ASH, DICE, GEN, KNN, RMD, Entropy, KLMatching, MaxLogit, ReAct, ViM
    from atom_plugin.detectors._fitting import PenultimateDetector
    from atom_plugin.features import PenultimateTap

    fns = [KNN.kth_distance, KNN._prepare, RMD.relative_distances, KLMatching._kl, PenultimateDetector._features,
           PenultimateDetector._head, PenultimateTap.forward, PenultimateTap.head]
    for cls in (MaxLogit, Entropy, GEN, KLMatching, KNN, ViM, ReAct, ASH, DICE, RMD):
        fns += [cls.__dict__[n] for n in ("_score", "_attack_loss") if n in cls.__dict__]
    from atom_plugin.detectors.ash import ash

    fns.append(ash)
    for fn in fns:
        src = inspect.getsource(fn)
        for bad in (".item(", ".cpu(", ".tolist(", ".cuda(", ".numpy("):
            assert bad not in src, f"{fn.__qualname__} contains {bad}"
        for builtin in ("float", "bool", "int"):
            assert not re.search(rf"(?<![\w.]){builtin}\(", src), f"{fn.__qualname__} calls {builtin}()"
