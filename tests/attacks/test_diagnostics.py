"""Gradient-masking diagnostics: all four checks fire on a 3-bit input-quantized pipeline
(no BPDA) and none fires on the plain model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from atom_plugin.attacks.diagnostics import MASKING_CHECKS, masking_diagnostics
from atom_plugin.detectors import RejectClass, ScoreDetector


pytestmark = pytest.mark.usefixtures("one_thread")


class Quantize3Bit(nn.Module):
    """The model behind 3-bit input quantization, round(7 x) / 7 (torch.round: zero gradient)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.ood_num_classes, self.ood_num_reject = model.ood_num_classes, model.ood_num_reject

    def forward(self, x):
        return self.model(torch.round(x * 7) / 7)


KW = dict(steps=5, n_queries=150)


def test_fires_on_quantized_pipeline(trained_small):
    det = RejectClass(Quantize3Bit(trained_small["model"]))
    with torch.no_grad():
        thr = torch.quantile(det.score(trained_small["x_id"]), 0.95).item()  # 95% TPR on ID data
    r = masking_diagnostics(det, trained_small["x_ood"][:48], thr, **KW)
    assert r["zero_grad_fraction"] == 1.0
    assert r["fpr_pgd"] == r["fpr_pgd_4x"] == 0.0 and r["fpr_square"] > 0
    assert all(r["checks"].values()), r["checks"]
    assert len(r["warnings"]) == len(MASKING_CHECKS)
    assert all("gradient masking" in w for w in r["warnings"])
    json.dumps(r)  # serialisable for the report


def test_silent_on_plain_model(trained_small):
    det, thr = trained_small["reject"], trained_small["thr_reject"]
    r = masking_diagnostics(det, trained_small["x_ood"][:48], thr, **KW)
    assert not any(r["checks"].values()), r
    assert r["warnings"] == []
    assert r["zero_grad_fraction"] == 0.0 and r["fpr_unbounded"] == 1.0
    assert r["fpr_pgd_4x"] >= r["fpr_pgd"] > r["fpr_clean"]


def test_black_box_detector_and_errors(trained_small):
    det = trained_small["reject"]
    bb = ScoreDetector(lambda t: det._score(t).detach())
    bb.differentiable = False
    r = masking_diagnostics(bb, trained_small["x_ood"][:8], trained_small["thr_reject"], steps=2, n_queries=20)
    assert r["fpr_pgd"] is None and r["fpr_square"] is not None and r["warnings"] == []
    with pytest.raises(ValueError, match="threshold"):
        masking_diagnostics(det, trained_small["x_ood"][:4], float("nan"))
    with pytest.raises(ValueError, match="eps"):
        masking_diagnostics(det, trained_small["x_ood"][:4], 0.5, eps=0.0)
    with pytest.raises(TypeError, match="Detector"):
        masking_diagnostics(lambda x: x, trained_small["x_ood"][:4], 0.5)
