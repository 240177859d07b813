"""Every pytorch-ood 0.4.0 detector class, adapted, is evaluated end to end under the four
tasks (black-box ones with the score-only attack), or refused with a one-sentence reason."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

import atom_plugin  # noqa: F401
from atom_plugin import evaluate
from atom_plugin.detectors import from_pytorch_ood, pytorch_ood_detector
from atom_plugin.detectors.adapters import PYTORCH_OOD_CLASSES, PYTORCH_OOD_REFUSED

pytest.importorskip("pytorch_ood.detector")
KW = {"KNN": {"k": 5}, "NNGuide": {"k": 5}, "MCD": {"samples": 3}, "ViM": {"d": 4}, "OpenMax": {"tailsize": 5}}
TASKS = ("natural", "corruption", "linf", "compositional")


@pytest.mark.parametrize("name", [n for n in PYTORCH_OOD_CLASSES if n not in PYTORCH_OOD_REFUSED])
def test_every_pytorch_ood_class_runs_the_four_tasks(tiny_world, name):
    model = tiny_world["model"]
    det = from_pytorch_ood(pytorch_ood_detector(name, model, **KW.get(name, {})), model, tiny_world["loader"])
    idd = TensorDataset(tiny_world["test_id"][:4], torch.arange(4) % tiny_world["K"])
    ood = {"noise": TensorDataset(tiny_world["test_ood"][:4])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained-ish detectors may rank the sets either way
        rep = evaluate(det, idd, ood, tasks=TASKS, steps=1, queries=4, corruptions=("contrast", "gaussian_noise"),
                       severities=(1,), progress=False)
    assert rep.tasks == list(TASKS)
    assert rep.config["linf_attack_used"] == ("pgd" if det.differentiable else "square")
    for task in TASKS:
        assert math.isfinite(rep.get("noise", task, "auroc"))
    if name not in ("MCD",):  # random (dropout) scores: no monotonicity to check
        assert rep.get("noise", "linf", "fpr") >= rep.get("noise", "natural", "fpr")


@pytest.mark.parametrize("name", sorted(PYTORCH_OOD_REFUSED))
def test_refused_classes_say_why_in_one_sentence(tiny_world, name):
    model = tiny_world["model"]
    with pytest.raises(ValueError, match="refused") as e:
        from_pytorch_ood(pytorch_ood_detector(name, model, **KW.get(name, {})), model, tiny_world["loader"])
    assert str(e.value).split("refused: ")[1].count(". ") == 0
