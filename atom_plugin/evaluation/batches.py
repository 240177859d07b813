"""Streaming the evaluation data in fixed global batches, sharded over ranks."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from .. import distributed as D
from .._utils import split_batch
from .._validation import check_dataset

__all__ = ["owned_batches", "num_batches"]


def _is_map_dataset(ds: Any) -> bool:
    return isinstance(ds, Dataset) and hasattr(ds, "__len__") and hasattr(ds, "__getitem__")


def owned_batches(data: Any, name: str, batch_size: int, max_examples: int | None,
                  num_workers: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(global_batch_index, x, y)`` for the batches this rank owns.

    Global batches are ``[b*bs, (b+1)*bs)`` of the (truncated) data; ranks own contiguous
    blocks of batches (:func:`atom_plugin.distributed.shard_indices` over batch indices),
    so a batch is the same whatever the number of processes.  A DataLoader with a
    non-sequential sampler (or any other iterable) is iterated by every rank, and rank
    ``r`` takes the batches ``b % world == r``.
    """
    check_dataset(data, name)
    ds, bs, kw = None, batch_size, {"num_workers": num_workers}
    if isinstance(data, DataLoader):
        if _is_map_dataset(data.dataset) and isinstance(data.sampler, SequentialSampler) and data.batch_size:
            ds, bs = data.dataset, data.batch_size
            kw = {"num_workers": data.num_workers, "collate_fn": data.collate_fn, "pin_memory": data.pin_memory}
    elif _is_map_dataset(data):
        ds = data
    if ds is not None:
        yield from _map_batches(ds, name, bs, max_examples, kw)
    else:
        yield from _iter_batches(data, name, max_examples)


def _map_batches(ds, name: str, bs: int, max_examples: int | None, kw: dict):
    rank, world = D.get_rank(), D.get_world_size()
    n = len(ds) if max_examples is None else min(len(ds), max_examples)
    if n == 0:
        raise ValueError(f"`{name}` is empty; every set needs at least one image.")
    mine = D.shard_indices(math.ceil(n / bs), rank, world)
    if not mine:
        return
    lo, hi = mine[0] * bs, min(n, (mine[-1] + 1) * bs)
    loader = DataLoader(Subset(ds, range(lo, hi)), batch_size=bs, shuffle=False,
                        generator=torch.Generator().manual_seed(lo), **kw)  # global RNG untouched
    for i, batch in enumerate(loader):
        x, y = split_batch(batch, name)
        yield mine[0] + i, x, y


def _iter_batches(data, name: str, max_examples: int | None):
    rank, world = D.get_rank(), D.get_world_size()
    seen = 0
    for b, batch in enumerate(data):
        x, y = split_batch(batch, name)
        if max_examples is not None:
            if seen >= max_examples:
                break
            keep = min(x.shape[0], max_examples - seen)
            x, y = x[:keep], (y[:keep] if y is not None else None)
        seen += x.shape[0]
        if b % world == rank:
            yield b, x, y
    if seen == 0:
        raise ValueError(f"`{name}` is empty; every set needs at least one image.")


def num_batches(data: Any, batch_size: int, max_examples: int | None) -> int | None:
    """Batches this rank will see (for the progress bar), or ``None`` when unknown."""
    try:
        if isinstance(data, DataLoader):
            if max_examples is None:
                return math.ceil(len(data) / max(D.get_world_size(), 1))
            n = len(data.dataset)
            return math.ceil(min(n, max_examples) / (data.batch_size or 1) / D.get_world_size())
        n = len(data)
        if max_examples is not None:
            n = min(n, max_examples)
        return math.ceil(math.ceil(n / batch_size) / D.get_world_size())
    except TypeError:
        return None
