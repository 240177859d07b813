"""Shared fixtures of the attack tests: a tiny (3+1)-way model trained for a few seconds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atom_plugin.detectors import MSP, RejectClass
from atom_plugin.models import Normalize, SmallCNN, with_reject_head


def blobs(n, g, k=3, size=16):
    """ID data: a coloured Gaussian blob whose position and colour give the class."""
    y = torch.randint(0, k, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    cx = (2 + 4 * y).float() + torch.rand(n, generator=g) * 3
    cy = (size / 2 - 2) + torch.rand(n, generator=g) * 4
    blob = torch.exp(-((xx - cx.view(-1, 1, 1)) ** 2 + (yy - cy.view(-1, 1, 1)) ** 2) / 8.0)
    colors = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])[y]
    img = 0.15 + 0.7 * blob.unsqueeze(1) * colors.view(-1, 3, 1, 1) + 0.05 * torch.rand(n, 3, size, size, generator=g)
    return img.clamp(0, 1), y


def smooth_noise(n, g, size=16):
    """Test OOD: bilinearly upsampled 8x8 noise (the model was trained on i.i.d. noise)."""
    return F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)


def threshold_95(det, x_id):
    with torch.no_grad():
        return torch.quantile(det.score(x_id), 0.95).item()


@pytest.fixture(scope="session")
def trained_small():
    """A (3+1)-way SmallCNN (width 6, 16x16) trained ~2 s on blobs (ID) against uniform noise
    (reject class).  Detectors RejectClass and MSP with thresholds at 95% TPR on ID data."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = with_reject_head(Normalize(SmallCNN(3, width=6), [0.5] * 3, [0.25] * 3), 3)
    xid, yid = blobs(256, g)
    xo = torch.rand(256, 3, 16, 16, generator=g)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(8):
        perm = torch.randperm(256, generator=g)
        for i in range(0, 256, 32):
            idx = perm[i:i + 32]
            x = torch.cat([xid[idx], xo[idx]])
            y = torch.cat([yid[idx], torch.full((len(idx),), 3)])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    torch.set_num_threads(n_threads)
    x_id, y_id = blobs(256, g)
    rej, msp = RejectClass(model), MSP(model)
    with torch.no_grad():
        acc = (rej.classify(x_id).argmax(1) == y_id).float().mean().item()
    return dict(model=model, reject=rej, msp=msp, thr_reject=threshold_95(rej, x_id),
                thr_msp=threshold_95(msp, x_id), x_id=x_id[:64], x_ood=smooth_noise(64, g), acc=acc)
