"""Hardening of models / pretrained: no silently discarded or re-initialised heads,
distilled timm heads, the pretrained-resolution path, double normalization, and
one-sentence errors for unreadable weights."""
from __future__ import annotations

import copy
import sys
import warnings

import pytest
import timm
import torch
import torch.nn as nn

from atom_plugin._validation import expected_channels, expected_dtype
from atom_plugin.detectors import MSP, RejectSum
from atom_plugin.models import Normalize, SmallCNN, head_spec, with_reject_head
from atom_plugin.pretrained import create_timm_model, load_checkpoint_model, load_robustbench_model, load_weights_only


def _x(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_k_plus_1_model_keeps_its_trained_head():
    torch.manual_seed(0)
    trained = SmallCNN(11, width=4).eval()  # e.g. a trained ATOM model rebuilt from a state dict
    w, b = trained.fc.weight.clone(), trained.fc.bias.clone()
    ref = trained(_x())
    with_reject_head(trained, 10)
    assert torch.equal(trained.fc.weight, w) and torch.equal(trained.fc.bias, b)
    assert torch.equal(trained(_x()), ref) and head_spec(trained) == (10, 1)
    again = with_reject_head(trained, 10)  # idempotent
    assert torch.equal(again.fc.weight, w)


def test_other_head_sizes_are_refused_unless_replace_head():
    torch.manual_seed(0)
    ten_way = SmallCNN(10, width=4)
    w = ten_way.fc.weight.clone()
    with pytest.raises(ValueError, match=r"10 outputs, neither num_classes=5 nor .*=6.*replace_head=True"):
        with_reject_head(ten_way, 5)
    assert torch.equal(ten_way.fc.weight, w) and ten_way.fc.out_features == 10  # untouched
    with_reject_head(ten_way, 5, replace_head=True)
    assert ten_way.fc.out_features == 6 and head_spec(ten_way) == (5, 1)
    with pytest.raises(TypeError, match="replace_head"):
        with_reject_head(SmallCNN(10, width=4), 10, replace_head="yes")


def test_distilled_timm_model_gets_both_heads_extended(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=10).eval()
    x = _x(2, 224)
    with torch.no_grad():
        ref = model(x)
    heads = copy.deepcopy((model.head, model.head_dist))
    with_reject_head(model, 10)
    assert model.head.out_features == model.head_dist.out_features == 11 and head_spec(model) == (10, 1)
    for old, new in zip(heads, (model.head, model.head_dist)):
        assert torch.equal(new.weight[:10], old.weight) and torch.equal(new.bias[:10], old.bias)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 11) and torch.allclose(out[:, :10], ref, atol=1e-5)
    # create_timm_model: a 1000-way distilled checkpoint, K = 10 (+1)
    path = tmp_path / "deit.pth"
    torch.save(timm.create_model("deit_tiny_distilled_patch16_224", num_classes=1000).state_dict(), path)
    m = create_timm_model("deit_tiny_distilled_patch16_224", 10, checkpoint=str(path), num_reject=1)
    assert m(x).shape == (2, 11) and m.model.head_dist.out_features == 11


def test_vit_pretrained_resolution_path(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=10).state_dict(), path)
    with pytest.warns(UserWarning, match=r"resampled from 14x14 to 2x2 tokens.*input_size='pretrained'"):
        small = create_timm_model("vit_tiny_patch16_224", 10, checkpoint=str(path), img_size=32)
    assert small.model.patch_embed.grid_size == (2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_timm_model("vit_tiny_patch16_224", 10, checkpoint=str(path), input_size="pretrained")
    assert model.input_size == (224, 224) and model.model.patch_embed.grid_size == (14, 14)
    x = _x(2, 32).requires_grad_(True)
    up = torch.nn.functional.interpolate(x.detach(), size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref = model.model(model.normalize(up))
    out = model(x)
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out.sum(), x)  # attacks act on the 32x32 input
    assert g.shape == x.shape and g.abs().sum() > 0
    with pytest.raises(ValueError, match="input_size"):
        create_timm_model("vit_tiny_patch16_224", 10, input_size="large")
    with pytest.raises(ValueError, match="only used with `normalize=True`"):
        create_timm_model("vit_tiny_patch16_224", 10, normalize=False, input_size=224)
    with pytest.raises(ValueError, match="`input_size` must be"):
        Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.2] * 3, input_size=(0, 32))


def test_double_normalization_is_refused():
    inner = create_timm_model("resnet18", 10)  # already a Normalize
    with pytest.raises(ValueError, match="already normalizes its inputs.*it is an atom_plugin.models.Normalize"):
        Normalize(inner, [0.5] * 3, [0.2] * 3)
    nested = nn.Sequential(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.2] * 3))
    with pytest.raises(ValueError, match=r"contains an atom_plugin.models.Normalize at '0'"):
        Normalize(nested, [0.5] * 3, [0.2] * 3)
    rb_like = SmallCNN(10, width=4)
    rb_like.ood_normalizes_inputs = True  # what load_robustbench_model sets
    with pytest.raises(ValueError, match="already normalizes"):
        Normalize(rb_like, [0.5] * 3, [0.2] * 3)


def test_reject_sum_never_guesses_r():
    torch.manual_seed(0)
    ten = SmallCNN(10, width=4)
    with pytest.raises(ValueError, match=r"num_classes=3.*10 outputs.*R=7.*num_reject=7"):
        RejectSum(ten, num_classes=3)
    det = RejectSum(ten, num_classes=3, num_reject=7)
    z = ten.eval()(_x())
    torch.testing.assert_close(det.score(_x()), torch.softmax(z, 1)[:, 3:].sum(1))
    with pytest.raises(ValueError, match="`num_reject`=5 does not fit"):
        RejectSum(ten, num_classes=3, num_reject=5)
    k5 = with_reject_head(SmallCNN(10, width=4), 10, 5)
    assert (RejectSum(k5).num_classes, RejectSum(k5).num_reject) == (10, 5)
    assert RejectSum(k5, num_classes=10).num_reject == 5
    with pytest.raises(ValueError, match="records ood_num_reject=5"):
        RejectSum(k5, num_classes=8)


def test_expected_channels_and_dtype():
    assert expected_channels(Normalize(SmallCNN(10, in_chans=1, width=4), [0.5], [0.2])) == 1
    assert expected_channels(Normalize(SmallCNN(10, width=4), [0.5], [0.2])) == 3  # one value broadcasts
    assert expected_channels(Normalize(nn.Flatten(), [0.5] * 2, [0.2] * 2)) == 2
    assert expected_channels(SmallCNN(10, in_chans=4, width=4)) == 4
    assert expected_channels(timm.create_model("test_vit", num_classes=3, img_size=32)) == 3
    assert expected_channels(MSP(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.2] * 3))) == 3
    assert expected_channels(nn.Linear(3, 3)) is None and expected_channels(lambda x: x) is None
    assert expected_dtype(SmallCNN(10, width=4)) == torch.float32
    assert expected_dtype(SmallCNN(10, width=4).double()) == torch.float64


def test_unreadable_weights_are_one_sentence_errors(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_weights_only(str(empty))
    with pytest.raises(ValueError, match="is a directory"):
        load_weights_only(str(tmp_path))
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="could not be read as a weights-only checkpoint"):
        load_checkpoint_model(str(rnd))
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint_model(str(tmp_path))
    # a SmallCNN state dict whose head does not match the declared K/R: shapes are reported, not raised raw
    sd = Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.2] * 3).state_dict()
    sd["model.fc.weight"] = torch.zeros(11, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit the model"):
        load_checkpoint_model(str(tmp_path / "bad.pt"), num_classes=10)


def test_unusable_robustbench_is_an_input_error(monkeypatch, tmp_path):
    from atom_plugin._compat import MissingDependencyError

    monkeypatch.setitem(sys.modules, "robustbench.model_zoo", None)  # import fails like a stale copy
    with pytest.raises(MissingDependencyError, match=r"robustbench 1\.1\.1.*pip install") as err:
        load_robustbench_model("Standard", str(tmp_path))
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)


def test_create_timm_model_normalizes_per_input_channel():
    gray = create_timm_model("resnet18", 10, in_chans=1)
    assert expected_channels(gray) == 1 and gray.mean.numel() == 1
    assert gray(_x(2)[:, :1]).shape == (2, 10)
    torch.testing.assert_close(gray.mean.flatten(), torch.tensor([(0.485 + 0.456 + 0.406) / 3]))
    with pytest.raises(ValueError, match="takes 1 input channels"):
        create_timm_model("resnet18", 10, in_chans=1, mean=[0.5] * 3, std=[0.2] * 3)
