"""Model wrappers: Normalize, with_reject_head (timm / RobustBench / plain), head_spec, FeatureTap."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import atom_plugin  # noqa: F401
import timm
from atom_plugin.features import FeatureTap, default_feature_layers
from atom_plugin.models import Normalize, SmallCNN, find_classifier, head_spec, with_reject_head


@pytest.fixture(scope="module")
def x():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _check_reject_head(model, x, head_name, k=10, r=1):
    """with_reject_head keeps the backbone and copies the K-way head into the first K rows."""
    before = copy.deepcopy(model).eval()
    model = with_reject_head(model, k, r).eval()
    after = model.state_dict()
    for name, value in before.state_dict().items():
        if not name.startswith(head_name):
            assert torch.equal(after[name], value), f"backbone tensor {name} changed"
    old_head = before.get_submodule(head_name)
    new_head = model.get_submodule(head_name)
    assert isinstance(new_head, nn.Linear) and new_head.out_features == k + r
    assert torch.equal(new_head.weight[:k], old_head.weight) and torch.equal(new_head.bias[:k], old_head.bias)
    with torch.no_grad():
        out, ref = model(x), before(x)
    assert out.shape == (x.shape[0], k + r) and torch.allclose(out[:, :k], ref, atol=1e-5)
    assert not torch.allclose(out[:, k:], torch.zeros_like(out[:, k:]))
    assert head_spec(model) == (k, r)
    return model


def test_reject_head_timm_nested_head(x):
    torch.manual_seed(0)
    model = timm.create_model("test_byobnet", num_classes=10)
    model = _check_reject_head(model, x, "head.fc")
    assert model.get_classifier() is model.head.fc and model.num_classes == 11


def test_reject_head_timm_under_normalize(x):
    torch.manual_seed(0)
    model = Normalize(timm.create_model("test_efficientnet", num_classes=10), [0.5] * 3, [0.25] * 3)
    _check_reject_head(model, x, "model.classifier", r=3)


def test_reject_head_timm_headless_uses_reset_classifier(x):
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0, img_size=32)
    mlp = copy.deepcopy(model.blocks[-1].mlp.fc2.state_dict())
    with_reject_head(model, 10, 1)
    # the last Linear of the backbone (ViT MLP) must not be mistaken for the classifier
    assert all(torch.equal(v, mlp[k]) for k, v in model.blocks[-1].mlp.fc2.state_dict().items())
    assert model(x).shape == (4, 11) and head_spec(model) == (10, 1)


def test_reject_head_robustbench_architecture(x):
    wrn = pytest.importorskip("robustbench.model_zoo.architectures.wide_resnet")
    torch.manual_seed(0)
    model = wrn.WideResNet(depth=10, num_classes=10, widen_factor=1)
    _check_reject_head(model, x, "fc")


def test_reject_head_plain_module_under_normalize(x):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    model = Normalize(body, [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    model = _check_reject_head(model, x, "model.4", r=5)
    assert find_classifier(model)[1] == "4"


def test_reject_head_new_k_starts_fresh(x):
    torch.manual_seed(0)
    model = SmallCNN(7, width=4)
    old = model.fc.weight.clone()
    with pytest.raises(ValueError, match="replace_head=True"):  # would silently discard the 7-way head
        with_reject_head(model, 10, 1)
    with_reject_head(model, 10, 1, replace_head=True)
    assert model.fc.out_features == 11 and model.num_classes == 11
    assert not torch.equal(model.fc.weight[:7], old)  # 7-way head cannot be reused for K = 10
    assert with_reject_head(SmallCNN(10, width=4), 10, 0).fc.out_features == 10


def test_reject_head_errors():
    no_linear = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no recognisable classifier"):
        with_reject_head(no_linear, 10)
    with pytest.raises(ValueError, match="`num_classes` must be >= 1"):
        with_reject_head(SmallCNN(10, width=4), 0)
    with pytest.raises(ValueError, match="`num_reject`"):
        with_reject_head(SmallCNN(10, width=4), 10, -1)
    with pytest.raises(TypeError, match="`num_classes` must be an int"):
        with_reject_head(SmallCNN(10, width=4), 10.0)
    with pytest.raises(TypeError, match="`model`"):
        with_reject_head(lambda z: z, 10)


def test_head_spec(tiny_kway, tiny_kplus1):
    assert head_spec(tiny_kway) == (10, 0)
    assert head_spec(tiny_kplus1) == (10, 1)
    assert head_spec(tiny_kplus1, num_classes=9) == (9, 2)
    with pytest.raises(ValueError, match="exceeds"):
        head_spec(tiny_kway, num_classes=11)
    with pytest.raises(ValueError, match="num_classes"):
        head_spec(nn.Sequential(nn.Flatten()))


def test_normalize(x):
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    model = Normalize(nn.Identity(), mean, std)
    expect = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model(x), expect)
    assert set(model.state_dict()) == {"mean", "std"}  # buffers: saved and moved with .to()
    assert model.to(torch.float64).mean.dtype == torch.float64
    with pytest.raises(ValueError, match="`std` must be positive"):
        Normalize(nn.Identity(), mean, [0.2, 0.0, 0.3])
    with pytest.raises(ValueError, match="same length"):
        Normalize(nn.Identity(), mean, [0.2, 0.3])
    with pytest.raises(TypeError, match="`model`"):
        Normalize("resnet", mean, std)


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_feature_tap_smallcnn_gradients_and_no_leftover_hooks(tiny_kway, x):
    tap = FeatureTap(tiny_kway)
    assert tap.layers == ["model.features.6", "model.features.13", "model.features.20"]
    xg = x.clone().requires_grad_(True)
    logits, feats = tap(xg)
    assert torch.allclose(logits, tiny_kway(x), atol=1e-6)
    assert [f.shape for f in feats] == [(4, 4, 16, 16), (4, 8, 8, 8), (4, 16, 1, 1)]
    # the features equal the model's own intermediate outputs and carry gradients to the input
    inner = tiny_kway.model.features
    assert torch.allclose(feats[0], inner[:7](tiny_kway.normalize(x)), atol=1e-6)
    grad, = torch.autograd.grad(feats[1].square().sum(), xg)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    assert _hook_count(tiny_kway) == 0


def test_feature_tap_removes_hooks_when_forward_fails(tiny_kway):
    tap = FeatureTap(tiny_kway, layers=["model.features.6"])
    with pytest.raises(ValueError, match="3-channel images"):
        tap(torch.rand(2, 5, 32, 32))  # wrong channel count: refused by Normalize (the channel rule)
    assert _hook_count(tiny_kway) == 0


def test_feature_tap_timm_defaults(x):
    torch.manual_seed(0)
    model = Normalize(timm.create_model("test_byobnet", num_classes=10), [0.5] * 3, [0.25] * 3).eval()
    layers = default_feature_layers(model)
    assert layers == ["model." + d["module"] for d in model.model.feature_info]
    logits, feats = FeatureTap(model)(x)
    assert torch.allclose(logits, model(x), atol=1e-6) and len(feats) == len(layers)
    assert all(f.dim() == 4 and f.shape[0] == 4 for f in feats)
    with pytest.raises(ValueError, match="unknown modules"):
        FeatureTap(model, layers=["model.nope"])
    with pytest.raises(ValueError, match="empty"):
        FeatureTap(model, layers=[])
