"""Contract tests every registered attack gets for free (parametrised over the attack registry):
output shape and dtype, the threat model (eps-ball and [0, 1]), the input untouched, the
model's modes / BatchNorm buffers / .grad untouched, same seed -> same output, and the
detector's score at the output never worse than at the input."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from atom_plugin.attacks import ATTACKS, list_attacks
from atom_plugin.detectors import MSP
from atom_plugin.evaluation import EvalConfig, build_attack, run_attack

EPS = 4 / 255


def _model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


def _config(name: str) -> EvalConfig:
    return EvalConfig(tasks=("natural",), eps=EPS, alpha=1 / 255, steps=3, queries=30, linf_attack=name,
                      attack_version="fast",
                      corruptions=("contrast", "gaussian_noise"), severities=(1, 3), progress=False)


def _cases():
    for name in list_attacks(threat="linf"):
        yield pytest.param("linf", name, id=f"linf-{name}")
    yield pytest.param("corruption", "pgd", id="corruption")
    yield pytest.param("compositional", "pgd", id="compositional")


@pytest.fixture
def x():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("task,linf", list(_cases()))
def test_attack_contract(task, linf, x):
    model = _model()
    det = MSP(model, num_classes=10)
    atk = build_attack(task, det, _config(linf), threshold=None)
    x0 = x.clone()
    bn = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the user's mode must come back
    det.training = True
    adv = run_attack(atk, x, seed=7)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.equal(x, x0), "the input was modified"
    assert model.training and det.training, "modes not restored"
    for k, v in model.state_dict().items():
        assert torch.equal(v, bn[k]), f"model state {k} changed"
    assert all(p.grad is None for p in model.parameters())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if task == "linf":
        assert float((adv - x).abs().max()) <= EPS + 1e-6
    model.eval()
    with torch.no_grad():
        assert bool((det.score(adv) <= det.score(x) + 1e-6).all()), "an output scores worse than its input"
    model.train()
    again = run_attack(build_attack(task, det, _config(linf), threshold=None), x, seed=7)
    torch.testing.assert_close(again, adv, rtol=0, atol=0)


def test_every_registered_attack_has_metadata():
    for name in ATTACKS.names():
        e = ATTACKS.get(name)
        assert e.threat in ("linf", "corruption", "compositional") and isinstance(e.gradient, bool) and e.help
