"""Offline weight loading: timm checkpoints (.pth / .safetensors) and RobustBench model_dir layout.

Every test runs with sockets disabled, so any download attempt fails the test.
"""
from __future__ import annotations

import os

import pytest
import torch

import atom_plugin  # noqa: F401
import timm
from atom_plugin.models import Normalize, head_spec
from atom_plugin.pretrained import (
    create_timm_model, read_state_dict,
)

NAME = "test_byobnet"  # a 0.46 M-parameter timm test model whose head is nested (head.fc)


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _reference(num_classes, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(NAME, pretrained=False, num_classes=num_classes).eval()


def _normalized(model):
    cfg = model.pretrained_cfg
    return Normalize(model, cfg["mean"], cfg["std"]).eval()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_timm_checkpoint_round_trip(tmp_path, x, fmt):
    ref = _reference(10)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}, "epoch": 3}, path)
    else:
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_file(ref.state_dict(), str(path))
    model = create_timm_model(NAME, num_classes=10, checkpoint=str(path))
    assert isinstance(model, Normalize) and not model.training
    assert "state_dict" not in model.model.pretrained_cfg  # no second copy of the weights kept
    assert model.model.pretrained_cfg["file"] == str(path)
    with torch.no_grad():
        assert torch.allclose(model(x), _normalized(ref)(x), atol=1e-5)
    # the timm mean/std are applied: feeding [0, 1] images equals feeding the normalized ones to timm
    assert torch.allclose(model.mean.flatten(), torch.tensor(ref.pretrained_cfg["mean"]))


def test_timm_imagenet_head_is_replaced_backbone_kept(tmp_path, x):
    ref = _reference(1000)
    torch.save(ref.state_dict(), tmp_path / "in1k.pth")
    model = create_timm_model(NAME, num_classes=10, checkpoint=str(tmp_path / "in1k.pth"), normalize=False)
    assert model.get_classifier().out_features == 10
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), ref.forward_features(x), atol=1e-5)


def test_timm_reject_head(tmp_path, x):
    ref = _reference(10)
    torch.save(ref.state_dict(), tmp_path / "k.pth")
    model = create_timm_model(NAME, num_classes=10, checkpoint=str(tmp_path / "k.pth"), num_reject=1)
    assert head_spec(model) == (10, 1)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 11) and torch.allclose(out[:, :10], _normalized(ref)(x), atol=1e-5)
    # a saved K+R model comes back whole, reject row included
    torch.save(model.model.state_dict(), tmp_path / "kr.pth")
    again = create_timm_model(NAME, num_classes=10, checkpoint=str(tmp_path / "kr.pth"), num_reject=1)
    assert head_spec(again) == (10, 1)
    with torch.no_grad():
        assert torch.allclose(again(x), out, atol=1e-5)


def test_timm_random_init_and_custom_stats(x):
    model = create_timm_model("test_vit", num_classes=4, img_size=32, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert model(x).shape == (3, 4)
    assert torch.allclose(model.std.flatten(), torch.full((3,), 0.2))


def test_timm_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_timm_model(NAME, 10, checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="num_classes"):
        create_timm_model(NAME, 0)
    with pytest.raises(ValueError, match="`name`"):
        create_timm_model("no_such_model_xyz", 10)
    with pytest.raises(ValueError, match="download"):
        create_timm_model(NAME, 10, pretrained=True)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickled_code_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil(str(sentinel))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        create_timm_model(NAME, 10, checkpoint=str(tmp_path / "evil.pth"))
    assert not sentinel.exists()
