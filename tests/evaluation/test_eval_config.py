"""EvalConfig (validation, legacy keywords, serialisation), the task registry, the report's
warnings (flipped score sign), attack costs, early stopping and the black-box fallback."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from atom_plugin import MSP, ScoreDetector, evaluate
from atom_plugin.evaluation import EvalConfig, list_tasks, register_task
from atom_plugin.models import Normalize, SmallCNN


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    model = Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval()
    g = torch.Generator().manual_seed(0)
    idd = TensorDataset(torch.rand(24, 3, 32, 32, generator=g) * 0.5 + 0.25, torch.randint(0, 10, (24,), generator=g))
    ood = TensorDataset(torch.rand(16, 3, 32, 32, generator=g))
    return model, idd, {"noise": ood}


def test_config_validates_once_with_the_argument_name():
    for bad, needle in (({"tasks": ("natural", "bogus")}, "tasks"), ({"eps": -1}, "eps"), ({"steps": 0}, "steps"),
                        ({"linf_attack": "nope"}, "linf_attack"), ({"tpr": 1.5}, "tpr"),
                        ({"tasks": ()}, "tasks"), ({"attack_version": "x"}, "attack_version")):
        with pytest.raises(ValueError, match=needle):
            EvalConfig(**bad)
    with pytest.raises(TypeError, match="unknown settings"):
        EvalConfig.build(None, stepz=3)
    with pytest.raises(ValueError, match="seed"):
        EvalConfig.build(None, corruption_kwargs={"seed": 1})


def test_legacy_keywords_and_round_trip():
    cfg = EvalConfig.build(None, tasks="linf", steps=3, corruption_kwargs={"backend": "torch", "batch_size": 7},
                           corruptions=None)
    assert cfg.tasks == ("linf",) and cfg.steps == 3 and cfg.corruption_backend == "torch"
    assert cfg.corruption_batch_size == 7 and cfg.corruptions is None
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(seed=4).seed == 4 and cfg.seed == 0


def test_report_carries_the_config(world):
    model, idd, ood = world
    cfg = EvalConfig(tasks=("natural", "linf"), steps=2, progress=False)
    rep = evaluate(MSP(model), idd, ood, cfg)
    assert EvalConfig.from_dict(rep.config["eval_config"]) == cfg
    assert rep.config["linf_attack_used"] == "pgd"
    cost = rep.config["attack_cost"]["noise"]["linf"]
    assert cost["backwards"] == 2 * 16  # 2 steps x 16 images, nothing else differentiates


def test_flipped_sign_is_warned_and_reported(world):
    model, idd, _ = world
    g = torch.Generator().manual_seed(5)
    ood = {"bright": TensorDataset(torch.rand(16, 3, 32, 32, generator=g) * 0.2 + 0.8)}
    good = ScoreDetector(lambda x: x.mean((1, 2, 3)), model)  # brightness: OOD here is brighter
    flipped = ScoreDetector(lambda x: -x.mean((1, 2, 3)), model)  # a confidence passed as a score
    assert evaluate(good, idd, ood, tasks=("natural",), progress=False).get("bright", "natural", "auroc") == 1.0
    with pytest.warns(UserWarning, match="AUROC"):
        rep = evaluate(flipped, idd, ood, tasks=("natural",), progress=False)
    assert any("AUROC" in w for w in rep.warnings) and "WARNING" in rep.table()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not evaluate(good, idd, ood, tasks=("natural",), progress=False).warnings


def test_custom_task_registration(world):
    model, idd, ood = world

    @register_task("darken", title="Darkened")
    def _darken(detector, config, threshold=None):
        return lambda x: x * 0.5

    try:
        assert "darken" in list_tasks()
        rep = evaluate(MSP(model), idd, ood, tasks=("natural", "darken"), progress=False)
        ref = MSP(model).score(torch.stack([ood["noise"][i][0] for i in range(16)]) * 0.5).detach().numpy()
        np.testing.assert_allclose(rep.scores["ood"]["noise"]["darken"], ref, rtol=1e-5, atol=1e-6)
        assert "Darkened" in rep.table()
    finally:
        from atom_plugin.evaluation import TASK_REGISTRY

        TASK_REGISTRY._entries.pop("darken")


def test_early_stopping_keeps_the_fpr(world):
    model, idd, ood = world
    det = MSP(model)
    full = evaluate(det, idd, ood, tasks=("linf",), steps=5, progress=False)
    early = evaluate(det, idd, ood, tasks=("linf",), steps=5, progress=False, early_stop=True)
    assert early.get("noise", "linf", "fpr") == full.get("noise", "linf", "fpr")
    assert early.config["early_stop"] and any("early stopping" in w for w in early.warnings)
    c_full = full.config["attack_cost"]["noise"]["linf"]
    c_early = early.config["attack_cost"]["noise"]["linf"]
    assert c_early["backwards"] <= c_full["backwards"]


def test_black_box_fallback_for_a_non_differentiable_detector(world):
    model, idd, ood = world
    from atom_plugin.attacks import list_attacks

    if not list_attacks(threat="linf", gradient=False):
        pytest.skip("no score-only L-inf attack registered")

    class Quantized(MSP):
        differentiable = False

        def _score(self, x):
            return super()._score(torch.round(x * 7) / 7)

    rep = evaluate(Quantized(model), idd, ood, tasks=("natural", "linf"), queries=20, progress=False)
    assert rep.config["linf_attack_used"] != "pgd"
    assert rep.get("noise", "linf", "fpr") >= rep.get("noise", "natural", "fpr")


class _ThreeBit(torch.nn.Module):
    """3-bit input quantization without BPDA: zero input gradient almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 7) / 7)


def test_diagnostics_fire_on_a_masked_pipeline_and_reach_the_report(world):
    model, idd, ood = world
    masked = MSP(_ThreeBit(model), num_classes=10)
    rep = evaluate(masked, idd, ood, tasks=("natural", "linf"), steps=2, queries=30, diagnostics=True,
                   progress=False)
    d = rep.config["diagnostics"]["noise"]
    assert d["zero_grad_fraction"] == 1.0 and d["checks"]["zero_grad"]
    assert any("gradient masking" in w for w in rep.warnings) and "gradient masking" in rep.table()
    plain = evaluate(MSP(model), idd, ood, tasks=("natural", "linf"), steps=2, queries=30, diagnostics=True,
                     progress=False)
    assert plain.config["diagnostics"]["noise"]["zero_grad_fraction"] == 0.0
    assert not plain.config["diagnostics"]["noise"]["checks"]["zero_grad"]


def test_report_records_the_corruption_table(world):
    model, idd, ood = world
    rep = evaluate(MSP(model), idd, ood, tasks=("natural", "corruption"), corruptions=("contrast",), severities=(1,),
                   progress=False)
    assert rep.config["corruption_table"] == "cifar"  # 32 px images, table="auto"
    rep = evaluate(MSP(model), idd, ood, tasks=("corruption",), corruptions=("contrast",), severities=(1,),
                   corruption_table="imagenet", progress=False)
    assert rep.config["corruption_table"] == "imagenet"
    with pytest.raises(ValueError, match="table"):
        evaluate(MSP(model), idd, ood, tasks=("corruption",), corruption_table="bogus", progress=False)
