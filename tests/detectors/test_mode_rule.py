"""The mode rule: building a detector puts its model in eval mode, so scores never depend
on the rest of the batch; evaluate() restores every module's own mode."""
from __future__ import annotations

import torch
import torch.nn as nn

from atom_plugin import MSP, Energy, evaluate
from torch.utils.data import TensorDataset


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 10))


def test_detector_scores_do_not_depend_on_the_batch():
    model = _bn_model().train()
    det = MSP(model, num_classes=10)
    assert not model.training and not det.training
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    alone = torch.cat([det.score(x[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(det.score(x), alone)


def test_evaluate_restores_modes_and_later_scores_do_not_drift():
    model = _bn_model()
    det = Energy(model, num_classes=10)
    det.train()  # the user asked for training mode on purpose
    g = torch.Generator().manual_seed(1)
    idd = TensorDataset(torch.rand(12, 3, 16, 16, generator=g), torch.randint(0, 10, (12,), generator=g))
    ood = TensorDataset(torch.rand(12, 3, 16, 16, generator=g))
    evaluate(det, idd, {"u": ood}, tasks=("natural",), progress=False)
    assert det.training and model.training  # restored
    model.eval()
    x = torch.rand(6, 3, 16, 16, generator=g)
    torch.testing.assert_close(det.score(x)[:3], det.score(x[:3]))
