"""A tiny trained world for the detector tests: a 4-class SmallCNN (width 4) trained for a
few seconds on coloured 16x16 images (so every class is predicted, correctly), fit
loaders, held-out ID images and uniform-noise OOD images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import atom_plugin  # noqa: F401  (before pytorch_ood)
from atom_plugin.models import Normalize, SmallCNN

K, SIZE = 4, 16
COLORS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float32) * 0.6 - 0.3


def make_id(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = 0.5 + COLORS[y][:, :, None, None] + 0.1 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="session")
def tiny_world():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Normalize(SmallCNN(K, width=4), [0.5] * 3, [0.25] * 3)
        xi, yi = make_id(256, 0)
        xo = torch.rand(256, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        model.train()
        for _ in range(60):
            idx = torch.randint(0, 256, (32,))
            zi, zo = model(xi[idx]), model(xo[idx])
            loss = F.cross_entropy(zi, yi[idx]) - 0.5 * F.log_softmax(zo, 1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        for p in model.parameters():
            p.grad = None
        ti, _ = make_id(16, 2)
        to = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
        loader = [(xi[i: i + 32], yi[i: i + 32]) for i in range(0, 96, 32)]
        yield dict(model=model, loader=loader, test_id=ti, test_ood=to, K=K)
    finally:
        torch.set_num_threads(threads)
