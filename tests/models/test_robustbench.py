"""RobustBench models from a local model_dir (needs the [robustbench] extra; skipped without it).

Every test runs with sockets disabled, so any download attempt fails the test.
"""
from __future__ import annotations

import os

import pytest
import torch

import atom_plugin  # noqa: F401
from atom_plugin.models import head_spec
from atom_plugin.pretrained import (
    load_robustbench_model, robustbench_checkpoint_path,
)

pytestmark = pytest.mark.usefixtures("no_network")


# --------------------------------------------------------------------------- RobustBench
def _robustbench_zoo():
    """The real robustbench's CIFAR-10 zoo, or skip the module.  The torchattacks wheel installs a
    stale ``robustbench/`` copy without package metadata, which must not count as installed."""
    from importlib import metadata

    try:
        metadata.version("robustbench")
    except metadata.PackageNotFoundError:
        pytest.skip("robustbench is not installed (the torchattacks wheel ships only a stale copy); "
                    "pip install '.[robustbench]'", allow_module_level=True)
    return pytest.importorskip("robustbench.model_zoo.cifar10")


rb_zoo = _robustbench_zoo()


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def mma(tmp_path_factory):
    """RobustBench's Ding2020MMA architecture (WRN-28-4, 5.8 M parameters), random weights on disk."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = rb_zoo.Ding2020MMANet().eval()
    path = robustbench_checkpoint_path("Ding2020MMA", root)
    os.makedirs(os.path.dirname(path))
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    return root, net


def test_robustbench_load_from_model_dir(mma, x):
    root, net = mma
    assert robustbench_checkpoint_path("Ding2020MMA", root) == os.path.join(root, "cifar10", "Linf", "Ding2020MMA.pt")
    model = load_robustbench_model("Ding2020MMA", root, "cifar10", "Linf")
    assert not model.training
    with torch.no_grad():
        ref = net(x)
        assert torch.allclose(model(x), ref, atol=1e-5)
    model = load_robustbench_model("Ding2020MMA", root, num_reject=2)
    assert head_spec(model) == (10, 2)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 12) and torch.allclose(out[:, :10], ref, atol=1e-5)


def test_robustbench_missing_file_says_where(tmp_path):
    expected = os.path.join(tmp_path, "cifar10", "Linf", "Wong2020Fast.pt")
    with pytest.raises(FileNotFoundError) as info:
        load_robustbench_model("Wong2020Fast", tmp_path)
    assert expected in str(info.value) and "never downloads" in str(info.value)
    assert not os.path.exists(os.path.join(tmp_path, "cifar10"))  # nothing created either
    # a model RobustBench routes to timm (Hugging Face hub) is refused the same way
    with pytest.raises(FileNotFoundError, match="Debenedetti2022Light_XCiT-S12.pt"):
        load_robustbench_model("Debenedetti2022Light_XCiT-S12", tmp_path)


def test_robustbench_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`name`"):
        load_robustbench_model("NotAModel", tmp_path)
    with pytest.raises(ValueError, match="`dataset`"):
        load_robustbench_model("Standard", tmp_path, dataset="mnist")
    with pytest.raises(ValueError, match="`threat_model`"):
        load_robustbench_model("Standard", tmp_path, threat_model="L7")
    with pytest.raises(ValueError, match="torchvision"):
        load_robustbench_model("Standard_R50", tmp_path, dataset="imagenet")


def test_robustbench_refuses_code_pickles(tmp_path):
    path = robustbench_checkpoint_path("Ding2020MMA", tmp_path)
    os.makedirs(os.path.dirname(path))
    sentinel = tmp_path / "pwned"
    torch.save({"state_dict": _Evil(str(sentinel))}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_robustbench_model("Ding2020MMA", tmp_path)
    assert not sentinel.exists()


def test_atom_trains_a_robustbench_backbone(mma, tmp_path):
    """ATOM on a RobustBench model with a reject head: backbone weights start from the
    checkpoint, the trainer runs, the weights move and the checkpoint keeps the K+1 head."""
    from torch.utils.data import TensorDataset

    from atom_plugin.training import TrainConfig, Trainer, load_checkpoint

    root, net = mma
    model = load_robustbench_model("Ding2020MMA", root, num_reject=1)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(0.4 * torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10)
    aux = TensorDataset(0.6 + 0.4 * torch.rand(16, 3, 32, 32, generator=g), torch.full((16,), -1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(method="atom", epochs=1, batch_size=8, outlier_batch_size=8, pool_size=16, mined_size=8,
                      steps=1, progress=False, score_batch_size=16)
    Trainer(model, ds, aux, cfg, out_dir=tmp_path).fit()
    assert head_spec(model) == (10, 1)
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any("fc" in k for k in moved) and any("conv" in k for k in moved)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["num_classes"] == 10 and ck["num_reject"] == 1 and ck["epoch"] == 1
