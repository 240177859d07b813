"""Informative outlier mining (ATOM Algorithm 1)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from atom_plugin.detectors import RejectClass, RejectSum
from atom_plugin.mining import (OutlierMiner, channels_last_helps, plot_score_histograms, reject_detector,
                                score_dataset, select_window, validate_mining)


class BrightnessModel(nn.Module):
    """K+1 model whose reject logit is 10 * mean brightness: brighter = more OOD."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(1))
        self.ood_num_classes = k
        self.ood_num_reject = 1
        self.calls_training = []

    def forward(self, x):
        self.calls_training.append(self.training)
        b = x.mean(dim=(1, 2, 3))
        return torch.cat([torch.zeros(len(x), self.k), (10 * b + self.dummy).unsqueeze(1)], 1)


def brightness_set(m: int = 200, labelled: bool = True):
    levels = torch.randperm(m, generator=torch.Generator().manual_seed(3)).float() / m
    x = levels.view(m, 1, 1, 1).expand(m, 3, 4, 4).clone()
    return (TensorDataset(x, torch.full((m,), -1)) if labelled else TensorDataset(x)), levels


def test_select_window_takes_sorted_slice():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    pos = select_window(scores, q=0.2, num_select=3)  # N=10: ranks [2, 5)
    assert scores[pos].tolist() == pytest.approx([0.2, 0.3, 0.4])
    assert select_window(scores, 0.0, 2).tolist() == [9, 1]  # the two hardest (lowest OOD score)
    top = select_window(scores, 0.7, 3)  # q = 1 - n/N: the easiest end
    assert scores[top].tolist() == pytest.approx([0.7, 0.8, 0.9])


def test_select_window_ties_are_deterministic():
    scores = torch.zeros(8)
    assert select_window(scores, 0.25, 4).tolist() == [2, 3, 4, 5]


@pytest.mark.parametrize("q,n,N,size,match", [
    (-0.1, 2, 10, None, "q"),
    (0.81, 2, 10, None, r"1 - n/N"),
    (0.0, 11, 10, None, "num_select"),
    (0.0, 2, 10, 5, "fewer than `pool_size`"),
    (math.nan, 2, 10, None, "finite"),
])
def test_validate_mining_rejects_bad_parameters(q, n, N, size, match):
    with pytest.raises(ValueError, match=match):
        validate_mining(q, N, n, size)


def test_miner_rejects_too_small_outlier_set():
    ds, _ = brightness_set(20)
    with pytest.raises(ValueError, match="fewer than `pool_size`"):
        OutlierMiner(ds, pool_size=50, num_select=10, q=0.0)


def test_mine_selects_window_of_current_scores():
    ds, levels = brightness_set(200)
    model = BrightnessModel().train()
    miner = OutlierMiner(ds, pool_size=100, num_select=20, q=0.25, batch_size=32, seed=5)
    res = miner.mine(model, epoch=0)
    cand = miner.candidates(0)
    assert len(set(cand.tolist())) == 100  # without replacement
    cand_levels = levels[cand].sort().values
    # window [25, 45) of the candidates sorted by brightness
    assert levels[res.indices].tolist() == pytest.approx(cand_levels[25:45].tolist())
    assert torch.all(res.scores[1:] >= res.scores[:-1])
    expected = torch.softmax(torch.cat([torch.zeros(20, 3), 10 * levels[res.indices].unsqueeze(1)], 1), 1)[:, 3]
    assert torch.allclose(res.scores, expected, atol=1e-6)
    # scored in eval mode, mode restored
    assert model.calls_training and not any(model.calls_training)
    assert model.training
    rec = miner.history[-1]
    assert rec["epoch"] == 0 and sum(rec["counts"]) == 100 and len(rec["edges"]) == len(rec["counts"]) + 1
    assert rec["window_low"] <= rec["window_high"]


def test_mine_is_deterministic_and_changes_with_epoch():
    ds, _ = brightness_set(200, labelled=False)  # bare images are accepted
    model = BrightnessModel()
    a = OutlierMiner(ds, 60, 10, 0.0, seed=1).mine(model, 3).indices
    b = OutlierMiner(ds, 60, 10, 0.0, seed=1).mine(model, 3).indices
    c = OutlierMiner(ds, 60, 10, 0.0, seed=1).mine(model, 4).indices
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mining_follows_the_model():
    """Changing the model changes which outliers are hard: invert brightness."""
    ds, levels = brightness_set(100)
    model = BrightnessModel()
    miner = OutlierMiner(ds, 100, 10, 0.0)
    dark = miner.mine(model, 0).indices
    with torch.no_grad():
        model.dummy.fill_(0)
    flip = BrightnessModel()
    flip.forward = lambda x: BrightnessModel.forward(flip, 1 - x)  # darker = more OOD now
    bright = miner.mine(flip, 0).indices
    assert levels[dark].max() < 0.1 and levels[bright].min() >= 0.9


def test_miner_needs_reject_class(tiny_kway):
    ds = TensorDataset(torch.rand(16, 3, 32, 32))
    miner = OutlierMiner(ds, 16, 4, 0.0)
    with pytest.raises(ValueError, match="reject class"):
        miner.mine(tiny_kway, 0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_score_dataset_matches_direct_scores(tiny_kplus1, channels_last):
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ds = TensorDataset(x, torch.full((10,), -1))
    idx = torch.tensor([7, 2, 5])
    det = RejectClass(tiny_kplus1)
    tiny_kplus1.train()
    s = score_dataset(det, ds, idx, batch_size=2, channels_last=channels_last)
    assert tiny_kplus1.training  # mode restored
    with torch.no_grad():
        ref = torch.softmax(tiny_kplus1.eval()(x[idx]), 1)[:, 10]
    assert torch.allclose(s, ref, atol=1e-6)


def test_miner_scores_with_the_detector():
    """The default score is the reject detector's (RejectClass for R = 1, RejectSum for
    R > 1: the total reject probability); any Detector class can rank instead."""
    from atom_plugin.models import SmallCNN, with_reject_head

    torch.manual_seed(0)
    model = with_reject_head(SmallCNN(3, width=2), 3, num_reject=2).eval()
    assert isinstance(reject_detector(model), RejectSum)
    x = torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ds = TensorDataset(x)
    res = OutlierMiner(ds, 30, 5, 0.0).mine(model, 0)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[:, 3:].sum(1)
    assert res.indices.tolist() == p.argsort()[:5].tolist()
    assert torch.allclose(res.scores, p[res.indices], atol=1e-6)

    class Darkness(RejectClass):  # a custom ranking: darker = more OOD
        def _score(self, z):
            return 1 - z.mean(dim=(1, 2, 3))

    model1 = with_reject_head(SmallCNN(3, width=2), 3)
    res = OutlierMiner(ds, 30, 5, 0.0, detector=Darkness).mine(model1, 0)
    assert res.indices.tolist() == (1 - x.mean(dim=(1, 2, 3))).argsort()[:5].tolist()
    with pytest.raises(TypeError, match="detector"):
        OutlierMiner(ds, 30, 5, 0.0, detector=3)
    assert channels_last_helps(model, "cpu") and not channels_last_helps(nn.Linear(2, 2), "cpu")


def test_state_dict_round_trip_and_plot(tmp_path):
    ds, _ = brightness_set(50)
    miner = OutlierMiner(ds, 40, 8, 0.5)
    miner.mine(BrightnessModel(), 0)
    miner.mine(BrightnessModel(), 1)
    other = OutlierMiner(ds, 40, 8, 0.5)
    other.load_state_dict(miner.state_dict())
    assert other.history == miner.history
    with pytest.raises(ValueError, match="q"):
        OutlierMiner(ds, 40, 8, 0.25).load_state_dict(miner.state_dict())
    plot_score_histograms(miner.history, tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 1000
