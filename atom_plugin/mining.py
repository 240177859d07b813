"""Informative outlier mining (ATOM paper, Algorithm 1).

Every epoch :class:`OutlierMiner` draws ``N`` candidate indices i.i.d. without
replacement from the auxiliary outlier dataset, scores them with the current model
(OOD score ``F(x)_{K+1}``, the softmax probability of the reject class; eval mode,
``torch.inference_mode``, batched), sorts the scores ascending and keeps the window
``[qN, qN + n)``: ``q = 0`` keeps the ``n`` hardest outliers (those that look most
in-distribution), larger ``q`` keeps easier ones.

Only candidate *indices* and *scores* are held in memory (``O(N)`` numbers), never the
candidate images.  Each call records a histogram of the candidates' scores (the paper's
Fig. 2 / Fig. 5) in :attr:`OutlierMiner.history`; :func:`plot_score_histograms` draws them.

Under ``torch.distributed`` every rank draws the same candidate sample (the generator is
seeded from ``seed`` and the epoch), scores its own shard, the scores are all-gathered,
and every rank selects the same subset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._validation import check_float, check_int
from .models import head_spec

__all__ = [
    "OutlierMiner",
    "MiningResult",
    "select_window",
    "validate_mining",
    "reject_score",
    "score_dataset",
    "plot_score_histograms",
]


def validate_mining(q: float, pool_size: int, num_select: int, dataset_size: int | None = None) -> tuple[float, int, int]:
    """Check Algorithm 1's parameters: ``1 <= n <= N``, ``0 <= q <= 1 - n/N`` and, when
    ``dataset_size`` is given, ``N <= dataset_size``.  Returns ``(q, N, n)``."""
    pool_size = check_int(pool_size, "pool_size (N)", low=1)
    num_select = check_int(num_select, "num_select (n)", low=1)
    q = check_float(q, "q", low=0.0, high=1.0)
    if num_select > pool_size:
        raise ValueError(
            f"`num_select` (n = {num_select}) must be <= `pool_size` (N = {pool_size}); "
            "mining keeps n of the N scored candidates."
        )
    q_max = 1.0 - num_select / pool_size
    if q > q_max + 1e-12:
        raise ValueError(
            f"`q` must lie in [0, 1 - n/N] = [0, {q_max:.6g}] for N = {pool_size} and n = {num_select}, "
            f"got {q}; lower q or n, or raise N."
        )
    if dataset_size is not None and pool_size > dataset_size:
        raise ValueError(
            f"The auxiliary outlier set has {dataset_size} images, fewer than `pool_size` N = {pool_size}; "
            f"use N <= {dataset_size} (and n <= N) or a larger outlier set."
        )
    return q, pool_size, num_select


def select_window(scores: torch.Tensor, q: float, num_select: int) -> torch.Tensor:
    """Positions of the window ``[qN, qN + n)`` of ``scores`` sorted ascending.

    Args:
        scores: ``(N,)`` OOD scores of the candidates.
        q: window start as a fraction of ``N``, ``0 <= q <= 1 - n/N``.
        num_select: ``n``, the window length.

    Returns:
        ``(n,)`` long tensor of positions into ``scores``, ordered by ascending score
        (ties broken by position, so the result is deterministic).
    """
    if scores.dim() != 1:
        raise ValueError(f"`scores` must have shape (N,), got {tuple(scores.shape)}.")
    q, pool, n = validate_mining(q, scores.numel(), num_select)
    start = int(math.floor(q * pool + 1e-9))
    start = min(start, pool - n)  # q = 1 - n/N exactly, up to rounding
    order = torch.sort(scores, stable=True).indices
    return order[start:start + n]


def reject_score(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The paper's OOD score of a K+R model: total softmax probability of the reject
    classes (``F(x)_{K+1}`` for ``R = 1``), shape ``(B,)``, in [0, 1]."""
    if logits.shape[1] <= num_classes:
        raise ValueError(
            f"The model has {logits.shape[1]} outputs but needs K + R > K = {num_classes} for a reject-class "
            "OOD score; wrap it with atom_plugin.with_reject_head(model, num_classes), or pass `score_fn`."
        )
    return torch.softmax(logits.float(), dim=1)[:, num_classes:].sum(dim=1)


def _images_of(batch):
    """Images of a batch that is ``(x, y)``, ``[x, y]`` or a bare ``x``."""
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def score_dataset(model: nn.Module, dataset: Dataset, indices: torch.Tensor, score_fn: Callable[[torch.Tensor], torch.Tensor], *,
                  batch_size: int = 512, num_workers: int = 0, device: torch.device | str | None = None,
                  progress: bool = False, desc: str = "mining") -> torch.Tensor:
    """OOD scores ``(len(indices),)`` (float32, CPU) of ``dataset[indices]``.

    ``score_fn`` maps logits ``(B, K+R)`` to scores ``(B,)``.  The model runs in eval mode
    under ``torch.inference_mode``; its previous train/eval mode is restored afterwards.
    Only the scores are kept, batch by batch.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    out = torch.empty(len(indices), dtype=torch.float32)
    if len(indices) == 0:
        return out
    # its own generator: iterating a DataLoader otherwise draws from the global RNG (and how
    # much depended on a tqdm wrapper), which would make training depend on `progress`
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
                        generator=torch.Generator().manual_seed(len(indices)))
    was_training = model.training
    model.eval()
    pos = 0
    try:
        with torch.inference_mode():
            it = loader
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(loader, desc=desc, leave=False)
            for batch in it:
                x = _images_of(batch).to(device, non_blocking=True)
                s = score_fn(model(x)).float().reshape(-1)
                out[pos:pos + s.numel()] = s.cpu()
                pos += s.numel()
    finally:
        model.train(was_training)
    return out


def _collective_device(device) -> torch.device:
    """CUDA for nccl, CPU for gloo."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device(device) if device is not None and torch.device(device).type == "cuda" \
            else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass
class MiningResult:
    """Outcome of one mining round.

    Attributes:
        indices: ``(n,)`` indices into the auxiliary dataset, ordered by ascending score.
        scores: ``(n,)`` OOD scores of the selected outliers.
        record: the histogram/statistics entry appended to :attr:`OutlierMiner.history`.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    record: dict


def _histogram(scores: torch.Tensor, bins: int) -> tuple[list[float], list[int]]:
    lo, hi = float(scores.min()), float(scores.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # probabilities: fixed edges so epochs are comparable
    elif hi <= lo:
        hi = lo + 1.0
    counts = torch.histc(scores.double(), bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return [float(e) for e in edges], [int(c) for c in counts]


class OutlierMiner:
    """Algorithm 1's informative outlier mining over an auxiliary outlier dataset.

    Args:
        dataset: auxiliary outliers; items are ``(image, label)`` or bare images,
            images ``(C, H, W)`` in [0, 1].
        pool_size: ``N``, candidates scored per round (``N <= len(dataset)``).
        num_select: ``n``, outliers kept per round (``n <= N``).
        q: window start, ``0 <= q <= 1 - n/N`` (paper: 0 for SVHN, 0.125 for CIFAR-10,
            0.5 for CIFAR-100).
        num_classes: ``K``; default: read from the model (:func:`~atom_plugin.head_spec`).
        score_fn: ``logits (B, K+R) -> (B,)`` OOD score, higher = more OOD; default
            :func:`reject_score` (``F(x)_{K+1}``).
        batch_size, num_workers: scoring loader settings.
        seed: base seed of the candidate sample; round ``epoch`` uses ``seed`` and
            ``epoch``, so all ranks and resumed runs draw the same candidates.
        bins: histogram bins recorded per round.
        progress: show a progress bar while scoring.
    """

    def __init__(self, dataset: Dataset, pool_size: int, num_select: int, q: float = 0.0, *,
                 num_classes: int | None = None, score_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_size: int = 512, num_workers: int = 0, seed: int = 0, bins: int = 50,
                 progress: bool = False) -> None:
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError("`dataset` must be a map-style Dataset with __len__ (an indexable outlier set).") from None
        self.q, self.pool_size, self.num_select = validate_mining(q, pool_size, num_select, size)
        self.dataset = dataset
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes", low=1)
        self.score_fn = score_fn
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self.num_workers = check_int(num_workers, "num_workers", low=0)
        self.seed = check_int(seed, "seed")
        self.bins = check_int(bins, "bins", low=1)
        self.progress = progress
        #: one dict per mining round: epoch, q, N, n, histogram edges/counts, window bounds.
        self.history: list[dict] = []

    def candidates(self, epoch: int) -> torch.Tensor:
        """The ``(N,)`` candidate indices of round ``epoch`` (i.i.d. without replacement,
        identical on every rank and across resumes)."""
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch) * 7919 + 17)
        return torch.randperm(len(self.dataset), generator=g)[: self.pool_size]

    def _score_fn(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.score_fn is not None:
            return self.score_fn
        k = self.num_classes
        if k is None:
            k, r = head_spec(model)
            if r < 1:
                raise ValueError(
                    "Outlier mining needs a model with a reject class (K+1 outputs) to compute F(x)_{K+1}; "
                    "wrap it with atom_plugin.with_reject_head(model, num_classes) or pass `score_fn`."
                )
        return lambda logits: reject_score(logits, k)

    def mine(self, model: nn.Module, epoch: int = 0, *, device: torch.device | str | None = None) -> MiningResult:
        """Score this round's ``N`` candidates with ``model`` and select ``[qN, qN + n)``.

        The model is used in eval mode (its mode is restored).  Under an initialised
        ``torch.distributed`` process group each rank scores ``candidates[rank::world]``
        and the scores are gathered, so every rank returns the same selection.
        """
        from . import distributed as dist_utils

        cand = self.candidates(epoch)
        score_fn = self._score_fn(model)
        if dist_utils.is_distributed():
            # contiguous shards: concatenating them in rank order restores candidate order
            mine = torch.as_tensor(dist_utils.shard_indices(len(cand)), dtype=torch.long)
            local = score_dataset(model, self.dataset, cand[mine], score_fn, batch_size=self.batch_size,
                                  num_workers=self.num_workers, device=device,
                                  progress=self.progress and dist_utils.is_main_process(),
                                  desc=f"mining epoch {epoch}")
            dev = _collective_device(device)
            scores = dist_utils.all_gather_cat(local.to(dev)).cpu()
            if scores.numel() != len(cand):
                raise RuntimeError(f"Gathered {scores.numel()} mining scores for {len(cand)} candidates; "
                                   "every rank must run the miner with the same settings.")
        else:
            scores = score_dataset(model, self.dataset, cand, score_fn, batch_size=self.batch_size,
                                   num_workers=self.num_workers, device=device, progress=self.progress,
                                   desc=f"mining epoch {epoch}")
        pos = select_window(scores, self.q, self.num_select)
        sel_scores = scores[pos]
        edges, counts = _histogram(scores, self.bins)
        record = {
            "epoch": int(epoch),
            "q": float(self.q),
            "N": int(self.pool_size),
            "n": int(self.num_select),
            "edges": edges,
            "counts": counts,
            "candidate_mean": float(scores.mean()),
            "window_low": float(sel_scores[0]),
            "window_high": float(sel_scores[-1]),
            "selected_mean": float(sel_scores.mean()),
        }
        self.history.append(record)
        return MiningResult(indices=cand[pos].clone(), scores=sel_scores.clone(), record=record)

    # -- checkpointing (plain Python types only: loadable with weights_only=True) --------
    def state_dict(self) -> dict:
        return {"q": float(self.q), "pool_size": int(self.pool_size), "num_select": int(self.num_select),
                "seed": int(self.seed), "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("q", self.q), ("pool_size", self.pool_size), ("num_select", self.num_select), ("seed", self.seed)):
            if key in state and state[key] != mine:
                raise ValueError(f"Checkpoint mining `{key}` = {state[key]} differs from this miner's {mine}; "
                                 "resume with the same settings.")
        self.history = [dict(h) for h in state.get("history", [])]


def plot_score_histograms(history: Sequence[dict], path=None, *, epochs: Sequence[int] | None = None, ax=None, log: bool = True):
    """Plot the per-round candidate score histograms recorded by :class:`OutlierMiner`
    (the paper's Fig. 2/5): one step curve per round, the selected window shaded for
    the last one.  Saves to ``path`` when given; returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("`history` is empty: run OutlierMiner.mine at least once before plotting.")
    chosen = [h for h in history if epochs is None or h["epoch"] in set(epochs)]
    if len(chosen) > 6 and epochs is None:  # keep the plot readable: first, last and a few between
        idx = sorted({round(i * (len(chosen) - 1) / 5) for i in range(6)})
        chosen = [chosen[i] for i in idx]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    for h in chosen:
        ax.stairs(h["counts"], h["edges"], label=f"epoch {h['epoch']}")
    last = chosen[-1]
    ax.axvspan(last["window_low"], last["window_high"], color="tab:red", alpha=0.15,
               label=f"selected [qN, qN+n), q={last['q']:g}")
    ax.set_xlabel("OOD score F(x)$_{K+1}$ of the N candidates")
    ax.set_ylabel("count")
    if log:
        ax.set_yscale("symlog", linthresh=1)
    ax.legend(fontsize=7)
    fig = fig or ax.figure
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
