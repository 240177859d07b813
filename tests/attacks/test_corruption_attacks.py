"""CorruptionAttack and CompositionalAttack: property tests on a tiny model."""
from __future__ import annotations

import pytest
import torch
import torchattacks

from atom_plugin.attacks import CompositionalAttack, CorruptionAttack, OODPGD
from atom_plugin.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt
from atom_plugin.detectors import MSP, RejectClass

DET = ("brightness", "contrast", "defocus_blur", "pixelate")  # deterministic candidates


@pytest.fixture
def det(tiny_kway):
    return MSP(tiny_kway)


@pytest.fixture
def x(images):
    return images[:4]


def test_is_torchattacks_attack_and_candidates(det):
    atk = CorruptionAttack(det)
    assert isinstance(atk, torchattacks.attack.Attack)
    assert len(atk.candidates) == 75
    assert len(CorruptionAttack(det, corruptions=ALL_CORRUPTIONS).candidates) == 95


def test_bad_arguments(det):
    with pytest.raises(ValueError, match="gaussian_noise"):
        CorruptionAttack(det, corruptions=("fogg",))
    with pytest.raises(ValueError, match="severit"):
        CorruptionAttack(det, severities=(0, 1))
    with pytest.raises(ValueError, match="empty"):
        CorruptionAttack(det, corruptions=())
    with pytest.raises(ValueError, match="too small"):
        CorruptionAttack(det, corruptions=("defocus_blur",))(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CorruptionAttack(det)(torch.rand(2, 3, 32, 32) + 1)


def test_winner_is_the_lowest_score_including_clean(det, x):
    atk = CorruptionAttack(det, corruptions=DET, severities=(1, 3, 5))
    adv = atk(x)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        clean = det.score(x)
        cands = torch.stack([clean] + [det.score(corrupt(x, c, s)) for c, s in atk.candidates], 1)
        best, arg = cands.min(1)
        assert torch.allclose(det.score(adv), best, atol=1e-6)
    assert torch.equal(atk.last_winner_index, arg - 1)
    assert torch.all(det.score(adv) <= clean + 1e-7)
    assert torch.allclose(atk.last_clean_score, clean)
    for i, w in enumerate(atk.last_winner):
        if w == "clean":
            assert torch.equal(adv[i], x[i])
        else:
            name, sev = w.split("/")
            assert torch.allclose(adv[i], corrupt(x[i:i + 1], name, int(sev))[0], atol=1e-6)


def test_default_75_never_worse_and_histogram(det, x):
    atk = CorruptionAttack(det)
    adv = atk(x[:2])
    with torch.no_grad():
        assert torch.all(det.score(adv) <= det.score(x[:2]) + 1e-7)
        assert torch.all(det.score(adv) < det.score(x[:2]))  # some corruption helps a random net
    h = atk.win_histogram()
    assert sum(h.values()) == 2 and set(h) == set(CORRUPTIONS) | {"clean"}
    small = CorruptionAttack(det, corruptions=DET[:2], severities=(1, 5))
    small(x)
    small(x[:2])
    assert sum(small.win_histogram().values()) == 6
    hs = small.win_histogram(by_severity=True)
    assert sum(hs.values()) == 6 and set(hs) == {"brightness/1", "brightness/5", "contrast/1", "contrast/5", "clean"}
    small.reset_histogram()
    assert sum(small.win_histogram().values()) == 0


def test_seeded_reproducible_and_chunking(det, x):
    rnd = ("gaussian_noise", "impulse_noise", "fog")
    a = CorruptionAttack(det, corruptions=rnd, severities=(2, 5), seed=3)(x)
    b = CorruptionAttack(det, corruptions=rnd, severities=(2, 5), seed=3)(x)
    assert torch.equal(a, b)
    full = CorruptionAttack(det, corruptions=DET, severities=(1, 5))
    chunked = CorruptionAttack(det, corruptions=DET, severities=(1, 5), batch_size=3)
    assert torch.equal(full(x), chunked(x))
    assert torch.equal(full.last_winner_index, chunked.last_winner_index)


def test_target_in_raises_score(det, x):
    atk = CorruptionAttack(det, corruptions=DET, target="in")
    adv = atk(x)
    with torch.no_grad():
        assert torch.all(det.score(adv) >= det.score(x) - 1e-7)


def test_top_candidates_sorted(det, x):
    atk = CorruptionAttack(det, corruptions=DET, severities=(2, 4))
    keys, imgs, idx = atk.top_candidates(x, k=3)
    assert keys.shape == (4, 3) and imgs.shape == (4, 3, 3, 32, 32) and idx.shape == (4, 3)
    assert torch.all(keys[:, :-1] <= keys[:, 1:])
    for i in range(4):
        assert len(set(idx[i].tolist())) == 3
    with torch.no_grad():
        assert torch.allclose(det.score(imgs[:, 1]), keys[:, 1], atol=1e-6)


def test_reference_backend_attack(det, x):
    atk = CorruptionAttack(det, corruptions=("contrast", "gaussian_noise"), severities=(2, 5),
                           backend="imagecorruptions")
    adv = atk(x[:2])
    with torch.no_grad():
        assert torch.all(det.score(adv) <= det.score(x[:2]) + 1e-7)


def test_model_plus_objective(tiny_kplus1, x):
    from atom_plugin.objectives import reject_nll

    atk = CorruptionAttack(tiny_kplus1, corruptions=DET, objective=reject_nll, num_classes=10)
    adv = atk(x)
    rc = RejectClass(tiny_kplus1, 10)
    with torch.no_grad():
        assert torch.all(rc.score(adv) <= rc.score(x) + 1e-7)


# -- compositional ---------------------------------------------------------------------
def test_compositional_within_eps_of_a_corruption(det, x):
    eps = 4 / 255
    atk = CompositionalAttack(det, eps=eps, alpha=1 / 255, steps=2, corruptions=DET, severities=(1, 5))
    adv = atk(x)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    center = atk.last_center
    assert float((adv - center).abs().max()) <= eps + 1e-6
    for i, w in enumerate(atk.last_winner):  # the centre is a corruption of the input
        if w == "clean":
            assert torch.equal(center[i], x[i])
        else:
            name, sev = w.split("/")
            assert torch.allclose(center[i], corrupt(x[i:i + 1], name, int(sev))[0], atol=1e-6)
    with torch.no_grad():  # PGD keeps its start: never worse than the corrupted centre
        assert torch.all(det.attack_loss(adv) >= det.attack_loss(center) - 1e-6)
        assert torch.allclose(atk.last_objective, det.attack_loss(adv), atol=1e-5)
        assert torch.all(det.score(adv) <= det.score(x) + 1e-6)


def test_compositional_top_k_and_reproducible(det, x):
    kw = dict(eps=4 / 255, alpha=1 / 255, steps=2, corruptions=DET, severities=(5,), seed=0)
    a1 = CompositionalAttack(det, top_k=1, **kw)
    a3 = CompositionalAttack(det, top_k=2, **kw)
    o1, o3 = a1(x), a3(x)
    assert torch.equal(o1, CompositionalAttack(det, top_k=1, **kw)(x))
    # the first of the k runs is the top_k=1 run (same seed): keeping the best is never worse
    assert torch.all(a3.last_objective >= a1.last_objective - 1e-6)
    assert float((o3 - a3.last_center).abs().max()) <= 4 / 255 + 1e-6


def test_compositional_custom_attacks(det, x):
    ca = CorruptionAttack(det, corruptions=("contrast",), severities=(5,))
    pgd = OODPGD(det, eps=2 / 255, alpha=1 / 255, steps=2)
    atk = CompositionalAttack(det, corruption_attack=ca, linf_attack=pgd)
    adv = atk(x)
    assert float((adv - atk.last_center).abs().max()) <= 2 / 255 + 1e-6
    with pytest.raises(TypeError, match="CorruptionAttack"):
        CompositionalAttack(det, corruption_attack=pgd)


class _Disagree(torch.nn.Module):
    """Logits slide from (2, 2, -10) to (3, 0, 0) as the mean pixel value rises: darker
    images have a higher uniform-CE objective but a lower max-softmax (a worse MSP score),
    brighter ones (e.g. the brightness corruption) a better score."""

    def forward(self, x):
        t = x.mean((1, 2, 3)).unsqueeze(1)
        a = torch.tensor([2.0, 2.0, -10.0], device=x.device)
        b = torch.tensor([3.0, 0.0, 0.0], device=x.device)
        return (1 - t) * a + t * b


def test_compositional_score_never_worse_even_when_objective_disagrees():
    det = MSP(_Disagree(), num_classes=3).eval()
    x = torch.full((3, 3, 32, 32), 0.5) + torch.linspace(-0.2, 0.2, 3).view(3, 1, 1, 1)
    pgd = OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)
    with torch.no_grad():
        moved = pgd(x)
        # the premise: PGD on uniform CE raises the objective and worsens the MSP score
        assert torch.all(det.attack_loss(moved) > det.attack_loss(x))
        assert torch.all(det.score(moved) > det.score(x))
    # top_k = 3: the starts are brightness 5, brightness 1 and the clean image; the objective
    # prefers the clean one, whose score is worse than the best corruption's
    for top_k in (1, 3):
        atk = CompositionalAttack(det, linf_attack=pgd, corruptions=("brightness",), severities=(1, 5),
                                  top_k=top_k)
        adv = atk(x)
        with torch.no_grad():
            best_corruption = CorruptionAttack(det, corruptions=("brightness",), severities=(1, 5))(x)
            assert torch.all(det.score(adv) <= det.score(atk.last_center) + 1e-7), top_k
            assert torch.all(det.score(adv) <= det.score(best_corruption) + 1e-7), top_k
            assert torch.all(det.score(adv) <= det.score(x) + 1e-7), top_k
            assert torch.allclose(atk.last_objective, det.attack_loss(adv), atol=1e-6), top_k


# -- severity tables, scores and reuse of a search (issue 14) --------------------------
class _Counting(torch.nn.Module):
    """Counts the images the wrapped model is run on."""

    def __init__(self, m):
        super().__init__()
        self.m, self.images = m, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.m(x)


def test_table_resolved_and_used(det, x):
    atk = CorruptionAttack(det, corruptions=("contrast", "pixelate"), severities=(1, 5))
    assert atk.table == "auto"
    adv = atk(x)
    assert atk.resolved_table == "cifar"  # 32 x 32 images: the paper's CIFAR-10-C constants
    for i, w in enumerate(atk.last_winner):
        if w != "clean":
            name, sev = w.split("/")
            assert torch.allclose(adv[i], corrupt(x[i:i + 1], name, int(sev), table="cifar")[0], atol=1e-6)
    imnet = CorruptionAttack(det, corruptions=("contrast",), severities=(5,), table="imagenet")
    out = imnet(x)
    assert imnet.resolved_table == "imagenet"
    for i, w in enumerate(imnet.last_winner):
        if w != "clean":
            assert torch.allclose(out[i], corrupt(x[i:i + 1], "contrast", 5, table="imagenet")[0], atol=1e-6)
    big = torch.nn.functional.interpolate(x[:2], size=(48, 48), mode="bilinear", align_corners=False)
    comp = CompositionalAttack(det, eps=2 / 255, alpha=1 / 255, steps=1, corruptions=("contrast",), severities=(1,))
    comp(big)
    assert comp.resolved_table == "tinyimagenet" and comp.table == "auto"


def test_table_bad_inputs(det, x, monkeypatch):
    with pytest.raises(ValueError, match="`table` must be one of"):
        CorruptionAttack(det, table="cifar100")
    with pytest.raises(ValueError, match="`table` must be one of"):
        CompositionalAttack(det, table="svhn")
    with pytest.raises(ValueError, match="no 'cifar' table"):
        CorruptionAttack(det, backend="imagecorruptions", table="cifar")
    with pytest.raises(ValueError, match="too small"):
        CorruptionAttack(det, corruptions=("pixelate",), table="imagenet")(torch.rand(1, 3, 3, 3))
    from atom_plugin.corruptions import tables

    monkeypatch.setitem(tables.SEVERITY_TABLES, "cifar",
                        {k: v for k, v in tables.SEVERITY_TABLES["cifar"].items() if k != "fog"})
    with pytest.raises(ValueError, match="table 'cifar' has no entry for corruption 'fog'"):
        CorruptionAttack(det, corruptions=("fog",), table="cifar")(x)


def test_clean_scored_once_and_last_scores(tiny_kway, x):
    counted = _Counting(tiny_kway)
    d = MSP(counted)
    atk = CorruptionAttack(d, corruptions=DET, severities=(1, 5), top_k=3)
    adv = atk(x)
    assert counted.images == x.shape[0] * (len(atk.candidates) + 1)  # every candidate once, clean once
    with torch.no_grad():
        torch.testing.assert_close(atk.last_scores, d.score(adv), atol=1e-6, rtol=0)
        torch.testing.assert_close(atk.last_clean_score, d.score(x), atol=1e-6, rtol=0)
        res = atk.last_topk
        assert res.images.shape == (4, 3, 3, 32, 32) and res.index.shape == (4, 3) and res.scores.shape == (4, 3)
        assert torch.all(res.scores[:, :-1] <= res.scores[:, 1:]) and res.table == "cifar"
        for j in range(3):
            torch.testing.assert_close(res.scores[:, j], d.score(res.images[:, j]), atol=1e-6, rtol=0)
        assert torch.equal(res.index[:, 0], atk.last_winner_index) and res.names(0) == atk.last_winner
        torch.testing.assert_close(res.clean_scores, d.score(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("top_k", [1, 2])
def test_compositional_from_corruption_result_equals_rerun(tiny_kway, x, top_k):
    kw = dict(eps=4 / 255, alpha=1 / 255, steps=2, corruptions=DET, severities=(1, 5), seed=0, top_k=top_k)
    counted = _Counting(tiny_kway)
    d = MSP(counted)
    rerun = CompositionalAttack(d, **kw)
    a = rerun(x)
    n_rerun = counted.images
    ca = CorruptionAttack(d, corruptions=DET, severities=(1, 5), seed=0, top_k=top_k)
    ca(x)
    reuse = CompositionalAttack(d, **kw)
    counted.images = 0
    b = reuse(x, corruption_result=ca.last_topk)
    assert torch.equal(a, b) and torch.equal(rerun.last_center, reuse.last_center)
    assert rerun.last_winner == reuse.last_winner and reuse.resolved_table == "cifar"
    # the search (every candidate and the clean batch, once each) is not run again
    assert n_rerun - counted.images == x.shape[0] * (len(ca.candidates) + 1)
    with torch.no_grad():
        torch.testing.assert_close(reuse.last_scores, d.score(b), atol=1e-6, rtol=0)
        torch.testing.assert_close(rerun.last_scores, d.score(a), atol=1e-6, rtol=0)
    assert sum(reuse.win_histogram().values()) == x.shape[0]


def test_compositional_bad_corruption_result(det, x):
    comp = CompositionalAttack(det, eps=2 / 255, alpha=1 / 255, steps=1, corruptions=DET, severities=(1,), top_k=2)
    ca = CorruptionAttack(det, corruptions=DET, severities=(1,), top_k=1)
    ca(x)
    with pytest.raises(ValueError, match="top_k=2"):
        comp(x, corruption_result=ca.last_topk)
    with pytest.raises(TypeError, match="CorruptionResult"):
        comp(x, corruption_result=(1, 2))
    other = CorruptionAttack(det, corruptions=DET[:2], severities=(1,), top_k=2)
    other(x)
    with pytest.raises(ValueError, match="other candidates"):
        comp(x, corruption_result=other.last_topk)
    ok = CorruptionAttack(det, corruptions=DET, severities=(1,), top_k=2)
    ok(x)
    with pytest.raises(ValueError, match="does not match the batch"):
        comp(x[:2], corruption_result=ok.last_topk)
