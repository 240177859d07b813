"""Shared fixtures: tiny models and tiny data, all on CPU, all seeded."""
from __future__ import annotations

import pytest
import torch

import atom_plugin  # noqa: F401  (applies the import compatibility fixes first)
from atom_plugin.models import Normalize, SmallCNN, with_reject_head

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is as fast and does not spin on a shared CPU
    (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng_seed():
    torch.manual_seed(0)
    return 0


@pytest.fixture
def tiny_kway():
    """A 10-way SmallCNN (width 4) taking 3x32x32 images in [0, 1], eval mode."""
    torch.manual_seed(0)
    return Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3).eval()


@pytest.fixture
def tiny_kplus1():
    """A (10+1)-way SmallCNN (width 4), eval mode, ``ood_num_classes == 10``."""
    torch.manual_seed(0)
    return with_reject_head(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3), 10).eval()


@pytest.fixture
def images():
    """8 random images (8, 3, 32, 32) in [0, 1]."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 32, 32, generator=g)
