"""Adapters: every pytorch-ood 0.4.0 detector class is adapted (scores; white-box ones
give a nonzero input gradient) or refused with a one-sentence reason; the no_grad
decorators are bypassed; OpenOOD-style confidences; ScoreDetector(higher_is_ood=False)."""
from __future__ import annotations

import inspect

import pytest
import torch

import atom_plugin  # noqa: F401
from atom_plugin.detectors import ScoreDetector, from_openood, from_pytorch_ood, pytorch_ood_detector
from atom_plugin.detectors.adapters import PYTORCH_OOD_CLASSES, PYTORCH_OOD_REFUSED

pood = pytest.importorskip("pytorch_ood.detector")
from pytorch_ood.api import Detector as PoodDetector  # noqa: E402

KW = {"KNN": {"k": 5}, "NNGuide": {"k": 5}, "MCD": {"samples": 3}, "ViM": {"d": 4}, "OpenMax": {"tailsize": 5}}
#: what the walk must find (documented in the README table); a change fails the test
EXPECTED_BLACK_BOX = {"GradNorm", "GradUncertainty", "MCD", "NACUE", "OpenMax", "Gram", "RankFeat"}


def test_class_list_is_pytorch_ood_040():
    found = {n for n, c in vars(pood).items() if inspect.isclass(c) and issubclass(c, PoodDetector)}
    assert found == set(PYTORCH_OOD_CLASSES) and len(PYTORCH_OOD_CLASSES) == 35


@pytest.mark.parametrize("name", PYTORCH_OOD_CLASSES)
def test_walk_every_pytorch_ood_class(tiny_world, name):
    model, x = tiny_world["model"], torch.cat([tiny_world["test_id"][:3], tiny_world["test_ood"][:3]])
    det = pytorch_ood_detector(name, model, **KW.get(name, {}))
    if name in PYTORCH_OOD_REFUSED:
        with pytest.raises(ValueError, match="refused") as e:
            from_pytorch_ood(det, model, tiny_world["loader"])
        reason = str(e.value).split("refused: ")[1]
        assert reason.count(". ") == 0 and reason.endswith(".")  # one sentence
        return
    adapted = from_pytorch_ood(det, model, tiny_world["loader"])
    assert adapted.adapter_mode == ("black-box" if name in EXPECTED_BLACK_BOX else "white-box")
    assert adapted.differentiable == (adapted.adapter_mode == "white-box")
    xg = x.clone().requires_grad_(True)
    s = adapted.score(xg)
    assert s.shape == (6,) and torch.isfinite(s).all()
    assert all(p.grad is None for p in model.parameters())  # fit, probe and score leave no .grad
    if adapted.differentiable:
        (g,) = torch.autograd.grad(adapted.attack_loss(xg).sum(), xg)
        assert torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).all()
    # same scores as pytorch-ood's own predict (deterministic classes)
    if name not in ("MCD",):
        with torch.no_grad():
            ref = det.predict(x) if name not in ("GradNorm", "GradUncertainty", "NACUE") else None
        model.zero_grad(set_to_none=True)  # pytorch-ood's own MahalanobisODIN.predict calls backward()
        if ref is not None:
            torch.testing.assert_close(s.detach().float(), ref.float(), rtol=1e-4, atol=1e-4 * max(1.0, ref.abs().max().item()))


def test_decorators_are_bypassed_not_removed(tiny_world):
    """DICE's predict_features carries torch.no_grad; the adapter scores with a gradient and
    pytorch-ood's own method keeps its decorator."""
    model = tiny_world["model"]
    det = pytorch_ood_detector("DICE", model)
    assert hasattr(type(det).predict_features, "__wrapped__")
    adapted = from_pytorch_ood(det, model, tiny_world["loader"])
    x = tiny_world["test_ood"][:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(adapted.attack_loss(x).sum(), x)
    assert (g.abs().sum() > 0) and "predict_features" not in det.__dict__
    with torch.enable_grad():
        assert not det.predict(x).requires_grad  # pytorch-ood itself: decorator intact


def test_unfitted_pytorch_ood_needs_fit_loader(tiny_world):
    det = pytorch_ood_detector("KNN", tiny_world["model"], k=3)
    with pytest.raises(ValueError, match="must be fitted: pass `fit_loader`"):
        from_pytorch_ood(det, tiny_world["model"])
    with pytest.raises(TypeError, match="pytorch_ood.detector instance"):
        from_pytorch_ood(lambda x: x, tiny_world["model"])


class _OpenOODStyle:
    """An OpenOOD-like postprocessor: setup() reads dict batches, postprocess() runs under
    no_grad and returns a confidence (max cosine to the class-mean logits, higher = ID)."""

    def setup(self, net, id_loader_dict, ood_loader_dict):
        zs, ys = [], []
        with torch.no_grad():
            for batch in id_loader_dict["train"]:
                zs.append(net(batch["data"]))
                ys.append(batch["label"])
        z, y = torch.cat(zs), torch.cat(ys)
        self.means = torch.stack([z[y == k].mean(0) for k in range(int(y.max()) + 1)])

    @torch.no_grad()
    def postprocess(self, net, data):
        z = net(data)
        conf, pred = torch.nn.functional.cosine_similarity(z[:, None], self.means[None], dim=2).max(1)
        return pred, conf


def test_from_openood_fits_with_dict_batches_and_flips_the_confidence(tiny_world):
    from atom_plugin.metrics import auroc

    model = tiny_world["model"]
    post = _OpenOODStyle()
    det = from_openood(post, model, fit_loader=tiny_world["loader"])
    assert det.differentiable is False and det.adapter_mode == "black-box"
    xi, xo = tiny_world["test_id"], tiny_world["test_ood"]
    with torch.no_grad():
        si, so = det.score(xi), det.score(xo)
        torch.testing.assert_close(si, -post.postprocess(model, xi)[1])
    assert auroc(si.numpy(), so.numpy()) > 0.8
    assert auroc(-si.numpy(), -so.numpy()) < 0.2  # the confidence taken as a score: flipped
    with pytest.raises(TypeError, match="postprocess"):
        from_openood(object(), model)


def test_score_detector_confidences(tiny_world):
    model = tiny_world["model"]
    conf = ScoreDetector(lambda x: model(x).softmax(1).amax(1), model, higher_is_ood=False)
    x = tiny_world["test_ood"][:4]
    with torch.no_grad():
        torch.testing.assert_close(conf.score(x), -model(x).softmax(1).amax(1))
    with pytest.raises(TypeError, match="higher_is_ood"):
        ScoreDetector(lambda x: x, higher_is_ood="no")
    bad = ScoreDetector(lambda x: model(x), model)  # (B, K): wrong shape
    with pytest.raises(ValueError, match=r"one score per image, shape \(4,\), got \(4, 4\)"):
        bad.score(x)
