"""Stock torchattacks code on OOD detectors fails at once with a sentence naming the fix."""
from __future__ import annotations

import pytest
import torch
import torchattacks

from atom_plugin import MSP, OODFGSM, OODMultiAttack, OODPGD


def test_stock_attack_on_a_detector_is_refused_with_the_fix(tiny_kway):
    det = MSP(tiny_kway, num_classes=10)
    with pytest.raises(TypeError, match="OODPGD"):
        torchattacks.PGD(det, eps=8 / 255)
    torchattacks.PGD(tiny_kway, eps=8 / 255)  # the classifier itself is fine


def test_multiattack_without_labels_points_at_oodmultiattack(tiny_kway, images):
    det = MSP(tiny_kway, num_classes=10)
    a, b = OODFGSM(det, eps=4 / 255), OODPGD(det, eps=4 / 255, steps=2)
    with pytest.raises(ValueError, match="OODMultiAttack"):
        torchattacks.MultiAttack([a, b])(images)
    adv = OODMultiAttack([a, b])(images)
    assert adv.shape == images.shape and float((adv - images).abs().max()) <= 4 / 255 + 1e-6
    # with labels (0 = OOD) and a threshold the stock class works as documented
    a.set_threshold(float(det.score(images).median()))
    out = torchattacks.MultiAttack([a, b])(images, torch.zeros(images.shape[0], dtype=torch.long))
    assert out.shape == images.shape
