"""Training recipes, the loop, checkpoints and exact resume (tiny models, few steps)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from atom_plugin.models import Normalize, SmallCNN, with_reject_head
from atom_plugin.objectives import neg_energy, reject_nll, uniform_ce
from atom_plugin.training import (TrainConfig, Trainer, TrainingDiverged, load_checkpoint, make_recipe,
                                  pgd_maximize, train)

EPS = 8 / 255


def tiny(k1: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    m = Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3)
    return with_reject_head(m, 10) if k1 else m


def data(n_id: int = 48, n_aux: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # ID: dark images, aux: bright ones (an easy split so learning is visible)
    x = 0.4 * torch.rand(n_id, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n_id,), generator=g)
    a = 0.6 + 0.4 * torch.rand(n_aux, 3, 32, 32, generator=g)
    return TensorDataset(x, y), TensorDataset(a, torch.full((n_aux,), -1))


def cfg(method: str = "atom", **kw) -> TrainConfig:
    base = dict(method=method, epochs=2, batch_size=16, outlier_batch_size=32, pool_size=64, mined_size=32,
                q=0.25, progress=False, score_batch_size=32)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ recipes
@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(5)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3]), torch.rand(6, 3, 32, 32, generator=g)


def test_atom_loss_is_ce_plus_lambda_reject_ce(batch):
    x, y, xo = batch
    model = tiny().eval()
    r = make_recipe(cfg("atom", lam=0.7), 10, 1)
    zi, zo = model(x), model(xo)
    loss, parts = r.loss(zi, y, zo)
    ref = F.cross_entropy(zi, y) + 0.7 * F.cross_entropy(zo, torch.full((6,), 10))
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(parts["loss_out"], reject_nll(zo, 10).mean())


def test_oe_loss_is_ce_plus_half_uniform_ce(batch):
    x, y, xo = batch
    model = tiny(k1=False).eval()
    r = make_recipe(cfg("oe"), 10, 0)
    zi, zo = model(x), model(xo)
    loss, _ = r.loss(zi, y, zo)
    ref = F.cross_entropy(zi, y) + 0.5 * (-(F.log_softmax(zo, 1)).mean(1)).mean()
    assert torch.allclose(loss, ref, atol=1e-6)
    assert r.lam == 0.5 and make_recipe(cfg("ntom"), 10, 1).lam == 1.0 and make_recipe(cfg("acet"), 10, 0).lam == 1.0


@pytest.mark.parametrize("method,k1,lam", [("ntom", True, 1.0), ("acet", False, 1.0), ("aloe", False, 0.5),
                                           ("aoe", False, 0.5)])
def test_other_losses_match_their_formulas(batch, method, k1, lam):
    """NTOM: CE + lam CE(-> K+1); ACET / ALOE / AOE: CE + lam uniform CE (their outliers
    differ, by perturb(), not their loss).  The lambda defaults are the papers'."""
    x, y, xo = batch
    model = tiny(k1=k1).eval()
    r = make_recipe(cfg(method), 10, 1 if k1 else 0)
    assert r.lam == lam
    zi, zo = model(x), model(xo)
    loss, parts = r.loss(zi, y, zo)
    if k1:
        out = F.cross_entropy(zo, torch.full((len(xo),), 10))
    else:
        out = (-(F.log_softmax(zo, 1)).mean(1)).mean()
    torch.testing.assert_close(loss, F.cross_entropy(zi, y) + lam * out, atol=1e-6, rtol=0)
    torch.testing.assert_close(parts["loss_out"], out, atol=1e-6, rtol=0)


def test_atom_perturbs_half_the_outliers_inside_the_ball(batch):
    x, y, xo = batch
    model = tiny().eval()
    r = make_recipe(cfg("atom"), 10, 1)
    torch.manual_seed(0)
    xi2, xo2 = r.perturb(model, x, y, xo)
    assert xi2 is x
    assert torch.equal(xo2[3:], xo[3:])  # clean half kept
    delta = (xo2[:3] - xo[:3]).abs()
    assert delta.max() <= EPS + 1e-6 and delta.max() > EPS / 2 and xo2.min() >= 0 and xo2.max() <= 1
    with torch.no_grad():  # the inner max raises CE(x', K+1)
        assert (reject_nll(model(xo2[:3]), 10) > reject_nll(model(xo[:3]), 10)).all()


def test_ntom_and_oe_do_not_perturb(batch):
    x, y, xo = batch
    for m, k1 in (("ntom", True), ("oe", False)):
        a, b = make_recipe(cfg(m), 10, int(k1)).perturb(tiny(k1).eval(), x, y, xo)
        assert a is x and b is xo


def test_acet_aloe_aoe_perturbations(batch):
    x, y, xo = batch
    model = tiny(k1=False).eval()
    with torch.no_grad():
        u0, e0, ce0 = uniform_ce(model(xo), 10), neg_energy(model(xo)), F.cross_entropy(model(x), y, reduction="none")
    torch.manual_seed(0)
    _, a = make_recipe(cfg("acet"), 10, 0).perturb(model, x, y, xo)
    assert torch.equal(a[3:], xo[3:])
    ai, ao = make_recipe(cfg("aloe"), 10, 0).perturb(model, x, y, xo)
    _, fo = make_recipe(cfg("aoe"), 10, 0).perturb(model, x, y, xo)
    with torch.no_grad():
        assert (uniform_ce(model(a[:3]), 10) > u0[:3]).all()   # ACET: more confident outliers
        assert (uniform_ce(model(ao), 10) > u0).all()          # ALOE: outliers attacked
        assert (F.cross_entropy(model(ai), y, reduction="none") > ce0).all()  # ALOE: ID attacked
        assert (neg_energy(model(fo)) > e0).all()              # AOE: energy lowered
    assert torch.allclose((fo - xo).abs().amax(dim=(1, 2, 3)), torch.full((6,), EPS), atol=1e-6) or \
        (fo - xo).abs().max() <= EPS + 1e-6  # one FGSM step of size eps (clipped at [0, 1])


def test_pgd_maximize_stays_in_ball_and_image_range(images):
    model = tiny().eval()
    adv = pgd_maximize(model, images, lambda z: reject_nll(z, 10), eps=0.1, alpha=0.05, steps=3)
    assert (adv - images).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


# ------------------------------------------------------------------ bad input
def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="lam"):
        cfg(lam=-1.0)
    with pytest.raises(ValueError, match=r"1 - n/N"):
        cfg(q=0.6)  # n/N = 0.5
    with pytest.raises(ValueError, match="q"):
        cfg(q=-0.1)
    with pytest.raises(ValueError, match="method"):
        cfg("nope")
    ds, aux = data(n_aux=40)
    with pytest.raises(ValueError, match="fewer than `pool_size`"):
        Trainer(tiny(), ds, aux, cfg())  # N = 64 > 40 outliers
    ds, aux = data()
    with pytest.raises(ValueError, match="with_reject_head"):
        Trainer(tiny(k1=False), ds, aux, cfg("atom"))
    with pytest.raises(ValueError, match="no reject class"):
        Trainer(tiny(k1=False), ds, aux, cfg("ntom"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Trainer(tiny(), TensorDataset(torch.rand(4, 3, 32, 32) * 255, torch.zeros(4, dtype=torch.long)), aux, cfg())
    # a bad image or label later in the data: caught at its step, not silently trained on
    x = torch.rand(48, 3, 32, 32)
    x[40] = 2.0
    with pytest.raises(ValueError, match=r"train_set images \(epoch 1, step \d\).*\[0, 1\]"):
        Trainer(tiny(), TensorDataset(x, torch.zeros(48, dtype=torch.long)), aux, cfg("ntom")).fit()
    y = torch.zeros(48, dtype=torch.long)
    y[7] = 10  # K = 10 classes: 10 is the reject index, not an ID label
    with pytest.raises(ValueError, match=r"labels .* \[0, 10\)"):
        Trainer(tiny(), TensorDataset(torch.rand(48, 3, 32, 32), y), aux, cfg("ntom")).fit()


# ------------------------------------------------------------------ the loop
def test_training_learns_and_logs(tmp_path):
    ds, aux = data()
    model = tiny()
    with torch.no_grad():
        before = torch.softmax(model.eval()(aux.tensors[0][:32]), 1)[:, 10].mean()
    tr = Trainer(model, ds, aux, cfg("ntom", epochs=3, lr=0.05), out_dir=tmp_path)
    hist = tr.fit()
    with torch.no_grad():
        p_aux = torch.softmax(model(aux.tensors[0][:32]), 1)[:, 10].mean()
        p_id = torch.softmax(model(ds.tensors[0][:32]), 1)[:, 10].mean()
    assert p_aux > before and p_aux > p_id
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and all("loss" in r and "mining" in r for r in lines)
    assert hist[-1]["loss"] == pytest.approx(lines[-1]["loss"])
    mining = json.loads((tmp_path / "mining.json").read_text())
    assert len(mining) == 3 and sum(mining[0]["counts"]) == 64
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 3 and ck["config"]["method"] == "ntom"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method,k1", [("atom", True), ("oe", False)])
def test_resume_is_bit_identical(tmp_path, method, k1):
    ds, aux = data()
    full = tiny(k1)
    torch.manual_seed(123)
    Trainer(full, ds, aux, cfg(method, epochs=2), out_dir=tmp_path / "full").fit()

    part = tiny(k1)
    torch.manual_seed(123)
    Trainer(part, ds, aux, cfg(method, epochs=1), out_dir=tmp_path / "part").fit()
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state at resume time
    resumed = tiny(k1, seed=7)  # different init: everything comes from the checkpoint
    tr = Trainer(resumed, ds, aux, cfg(method, epochs=2), out_dir=tmp_path / "part", resume=True)
    assert tr.epoch == 1
    tr.fit()
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]


def test_resume_refuses_other_settings(tmp_path):
    ds, aux = data()
    Trainer(tiny(), ds, aux, cfg(epochs=1), out_dir=tmp_path).fit()
    with pytest.raises(ValueError, match="q=0.25"):
        Trainer(tiny(), ds, aux, cfg(epochs=2, q=0.0), out_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError):
        Trainer(tiny(), ds, aux, cfg(epochs=2), resume=tmp_path / "missing.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ds, aux = data()
    model = tiny()
    tr = Trainer(model, ds, aux, cfg("ntom", epochs=3, log_every=1), out_dir=tmp_path)
    tr.train_epoch(0)
    tr.epoch = 1
    tr.save()
    good = _weights(model)
    orig = tr.recipe.loss

    def nan_loss(*a):
        loss, parts = orig(*a)
        loss = loss * float("nan")
        return loss, {**parts, "loss": loss.detach()}

    tr.recipe.loss = nan_loss
    with pytest.raises(TrainingDiverged, match="NaN"):
        tr.fit()
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 1
    for k, v in good.items():
        assert torch.equal(ck["model"][k], v)


def test_train_function_and_options(tmp_path):
    ds, aux = data()
    model = tiny(k1=False)
    before = _weights(model)
    with pytest.warns(UserWarning, match="CUDA"):
        out = train(model, ds, aux, method="aoe", epochs=1, batch_size=16, outlier_batch_size=32, progress=False,
                    amp="bf16", channels_last=True)
    assert out is model and not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # milestones default to 50/75/90% of the epochs
    assert TrainConfig(epochs=100).milestone_epochs() == [50, 75, 90]
    assert TrainConfig(epochs=20).milestone_epochs() == [10, 15, 18]


def test_train_cli_runs_and_resumes(tmp_path, capsys):
    from atom_plugin.cli import main

    out = tmp_path / "run"
    args = ["train", "--method", "ntom", "--width", "4", "--batch-size", "128", "--outlier-batch-size", "64",
            "-N", "300", "-n", "150", "--q", "0.5", "--quiet", "--out", str(out)]
    assert main(args + ["--epochs", "1"]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1 and ck["arch"] == "smallcnn" and ck["num_reject"] == 1
    assert ck["config"]["q"] == 0.5 and ck["config"]["pool_size"] == 300
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    # bad input: one-line errors, exit code 2
    assert main(args[:-2] + ["--out", str(tmp_path / "x"), "--epochs", "1", "--lam", "-1"]) == 2
    assert main(args[:-2] + ["--out", str(tmp_path / "y"), "--epochs", "1", "--q", "0.9"]) == 2
    assert main(args[:-2] + ["--out", str(tmp_path / "z"), "--epochs", "1", "-N", "999999", "-n", "10"]) == 2
    err = capsys.readouterr().err
    assert "lam" in err and "1 - n/N" in err
    assert "fewer than `pool_size`" in err or "exceeds the 5000 auxiliary images" in err  # the CLI checks N first


def test_progress_bars_do_not_change_the_result(capsys):
    """tqdm around a DataLoader changed how much of the global RNG the loader consumed,
    which the training PGD also draws from: same seed, same weights with or without bars."""
    ds, aux = data()
    weights = []
    for progress in (False, True):
        torch.manual_seed(0)
        model = tiny()
        Trainer(model, ds, aux, cfg("atom", epochs=2, progress=progress)).fit()
        weights.append((_weights(model), torch.rand(1)))
    (a, ra), (b, rb) = weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(ra, rb)  # and the global RNG is left in the same state
    capsys.readouterr()


@pytest.mark.parametrize("method,k1,per_step,mining", [("atom", True, 5 + 1, 2), ("ntom", True, 1, 2),
                                                       ("oe", False, 1, 0), ("acet", False, 5 + 1, 0)])
def test_forward_count_per_step(method, k1, per_step, mining):
    """No forward is repeated: ATOM = PGD steps + one train-mode forward per step, NTOM/OE =
    one; mining = ceil(N / score_batch) forwards per epoch (N = 64, batch 32)."""
    ds, aux = data()
    model = tiny(k1)
    calls = []
    model.register_forward_hook(lambda m, a, out: calls.append((m.training, a[0].shape[0])))
    tr = Trainer(model, ds, aux, cfg(method, epochs=1))
    tr.fit()
    steps = 48 // 16
    assert len(calls) == steps * per_step + mining
    assert sum(1 for train_mode, _ in calls if train_mode) == steps
    assert all(p.requires_grad for p in model.parameters())  # the attack's freeze is undone


def test_input_layout_nhwc_on_cpu_and_off_on_request():
    """Auto: NHWC inputs for a conv model on the CPU (same math: after one step the weights
    agree with the NCHW run to float rounding; over many steps, and with ATOM's sign steps,
    the trajectories separate like runs on two CPUs); False: the NCHW inputs as given.  The
    hook is removed afterwards."""
    ds, aux = data(n_id=16)  # one step of 16 ID + 32 outliers
    weights, layouts = [], []
    for flag in (None, False):
        model = tiny()
        seen = []
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        h = conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
        torch.manual_seed(0)
        Trainer(model, ds, aux, cfg("ntom", epochs=1, input_channels_last=flag)).fit()  # mining + 1 step
        h.remove()
        assert not model._forward_pre_hooks
        layouts.append(seen)
        weights.append(_weights(model))
    assert not any(layouts[0]) and all(layouts[1])  # NHWC is not NCHW-contiguous
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=2e-6, rtol=1e-5)
    with pytest.raises(TypeError, match="input_channels_last"):
        cfg(input_channels_last="yes")
    assert cfg().score_batch("cpu") == 32 and TrainConfig().score_batch("cpu") == 128
    assert TrainConfig().score_batch("cuda") == 512
