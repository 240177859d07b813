"""Informative outlier mining (ATOM paper, Algorithm 1).

Every epoch :class:`OutlierMiner` draws ``N`` candidate indices i.i.d. without
replacement from the auxiliary outlier dataset, scores them with the current model
(OOD score ``F(x)_{K+1}``, the softmax probability of the reject class, computed by the
bare ``_score`` of :class:`~atom_plugin.RejectClass` / ``RejectSum`` (:func:`reject_detector`),
or of any detector passed as ``detector``; eval mode, ``torch.inference_mode``, batched,
the scores kept on the device until the end), sorts the scores ascending and keeps the window
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

from ._utils import collective_device, eval_mode, module_device, split_batch
from ._utils import progress as progress_bar
from ._validation import check_float, check_int
from .detectors.base import Detector
from .detectors.reject import RejectClass, RejectSum
from .models import head_spec

__all__ = [
    "OutlierMiner",
    "MiningResult",
    "select_window",
    "validate_mining",
    "reject_detector",
    "score_dataset",
    "channels_last_helps",
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


def channels_last_helps(model: nn.Module, device: torch.device | str) -> bool:
    """Whether the trainer and the miner feed ``model`` channels-last (NHWC) inputs by
    default: on the CPU, for convolutional models.  oneDNN runs NHWC convolutions and
    pooling without per-layer layout reorders (measured on the demo's SmallCNN, one thread:
    scoring ~1.8x, forward + backward ~1.2x faster); the model's weights are not touched.
    Same float32 math, so results agree with NCHW up to summation order (~1e-7), not bit
    for bit.  Off on CUDA (use ``TrainConfig.channels_last`` there) and for models without
    a ``Conv2d`` (an MLP may ``view`` its input, which needs NCHW-contiguous memory)."""
    return torch.device(device).type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def reject_detector(model: nn.Module, num_classes: int | None = None) -> Detector:
    """The paper's mining score for a K+R model, as a detector: :class:`RejectClass`
    (``F(x)_{K+1}``, the reject-class softmax probability) for ``R = 1``, :class:`RejectSum`
    (total reject probability) for ``R > 1``.  A K-way model is refused with a message."""
    _, r = head_spec(model, num_classes)
    if r < 1:
        raise ValueError(
            "Outlier mining needs a model with a reject class (K+1 outputs) to compute F(x)_{K+1}; wrap it with "
            "atom_plugin.with_reject_head(model, num_classes), or pass `detector` (any Detector whose score ranks "
            "the candidates).")
    return (RejectClass if r == 1 else RejectSum)(model, num_classes)


def score_dataset(detector: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, indices: torch.Tensor, *,
                  batch_size: int = 512, num_workers: int = 0, device: torch.device | str | None = None,
                  progress: bool = False, desc: str = "mining", channels_last: bool = False) -> torch.Tensor:
    """OOD scores ``(len(indices),)`` (float32, CPU) of ``dataset[indices]``.

    ``detector``: a :class:`~atom_plugin.detectors.Detector` (its bare ``_score`` is used:
    no per-batch validation, no host sync) or any callable ``images -> (B,)``.  Its model
    runs in eval mode under ``torch.inference_mode`` (every submodule's mode is restored
    afterwards).  Batches are read into pinned memory and copied asynchronously on CUDA; the
    scores stay on the device until the end (one transfer, no per-batch sync).
    ``channels_last`` feeds NHWC batches (see :func:`channels_last_helps`).
    """
    score = detector._score if isinstance(detector, Detector) else detector
    model = detector.model if isinstance(detector, Detector) else (detector if isinstance(detector, nn.Module)
                                                                   else None)
    device = torch.device(device) if device is not None else module_device(model)
    if len(indices) == 0:
        return torch.empty(0, dtype=torch.float32)
    # its own generator: iterating a DataLoader otherwise draws from the global RNG (and how
    # much depended on a tqdm wrapper), which would make training depend on `progress`
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(len(indices)))
    out = torch.empty(len(indices), dtype=torch.float32, device=device)  # filled in place: one buffer
    pos = 0
    with eval_mode(model), torch.inference_mode():
        for batch in progress_bar(loader, progress, desc):
            x, _ = split_batch(batch, "the outlier dataset")
            x = x.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            s = score(x).reshape(-1)
            out[pos:pos + s.numel()] = s
            pos += s.numel()
    return out.cpu()


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
        detector: ``model -> Detector`` (e.g. a Detector class) whose bare ``_score``
            ranks the candidates, higher = more OOD; default :func:`reject_detector`
            (``F(x)_{K+1}``: :class:`~atom_plugin.RejectClass`, or ``RejectSum`` for R > 1).
        batch_size, num_workers: scoring loader settings.
        seed: base seed of the candidate sample; round ``epoch`` uses ``seed`` and
            ``epoch``, so all ranks and resumed runs draw the same candidates.
        bins: histogram bins recorded per round.
        progress: show a progress bar while scoring.
        channels_last: score NHWC batches; ``None``: when :func:`channels_last_helps`.
    """

    def __init__(self, dataset: Dataset, pool_size: int, num_select: int, q: float = 0.0, *,
                 num_classes: int | None = None, detector: Callable[..., Detector] | None = None,
                 batch_size: int = 512, num_workers: int = 0, seed: int = 0, bins: int = 50,
                 progress: bool = False, channels_last: bool | None = None) -> None:
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError("`dataset` must be a map-style Dataset with __len__ (an indexable outlier set).") from None
        self.q, self.pool_size, self.num_select = validate_mining(q, pool_size, num_select, size)
        self.dataset = dataset
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes", low=1)
        if detector is not None and not callable(detector):
            raise TypeError(f"`detector` must be a callable model -> Detector (e.g. RejectClass), got "
                            f"{type(detector).__name__}.")
        self.detector = detector
        self.channels_last = channels_last
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

    def _detector(self, model: nn.Module) -> Detector:
        if self.detector is not None:
            return self.detector(model, self.num_classes)
        return reject_detector(model, self.num_classes)

    def _scores(self, detector: Detector, cand: torch.Tensor, device: torch.device, epoch: int) -> torch.Tensor:
        """Scores of the candidates ``cand`` (sharded and all-gathered under DDP)."""
        from . import distributed as dist_utils

        opts = dict(batch_size=self.batch_size, num_workers=self.num_workers, device=device,
                    desc=f"mining epoch {epoch}",
                    channels_last=channels_last_helps(detector, device) if self.channels_last is None
                    else bool(self.channels_last))
        if not dist_utils.is_distributed():
            return score_dataset(detector, self.dataset, cand, progress=self.progress, **opts)
        # contiguous shards: concatenating them in rank order restores candidate order
        mine = torch.as_tensor(dist_utils.shard_indices(len(cand)), dtype=torch.long)
        local = score_dataset(detector, self.dataset, cand[mine],
                              progress=self.progress and dist_utils.is_main_process(), **opts)
        scores = dist_utils.all_gather_cat(local.to(collective_device(device))).cpu()
        if scores.numel() != len(cand):
            raise RuntimeError(f"Gathered {scores.numel()} mining scores for {len(cand)} candidates; "
                               "every rank must run the miner with the same settings.")
        return scores

    def mine(self, model: nn.Module, epoch: int = 0, *, device: torch.device | str | None = None) -> MiningResult:
        """Score this round's ``N`` candidates with ``model`` and select ``[qN, qN + n)``.

        The model is used in eval mode (its mode is restored).  Under an initialised
        ``torch.distributed`` process group each rank scores ``candidates[rank::world]``
        and the scores are gathered, so every rank returns the same selection.
        """
        cand = self.candidates(epoch)
        device = torch.device(device) if device is not None else module_device(model)
        with eval_mode(model):  # building a detector sets eval mode: restore the caller's modes
            scores = self._scores(self._detector(model), cand, device, epoch)
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
