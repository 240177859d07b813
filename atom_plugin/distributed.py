"""Data-parallel helpers for ``torchrun`` (no DDP wrapper needed for scoring).

Every function is a no-op (or the identity) when ``torch.distributed`` is not
initialised or the world size is 1, so library code calls them unconditionally.

Typical use under ``torchrun --nproc_per_node=N script.py``::

    from atom_plugin import distributed as dist_utils
    dist_utils.init_from_env()                        # gloo on CPU, nccl on CUDA
    idx = dist_utils.shard_indices(len(dataset))      # this rank's indices
    scores = score(Subset(dataset, idx))              # (n_rank,) on this rank
    all_scores = dist_utils.all_gather_cat(scores)    # (len(dataset),) on every rank,
                                                      # in dataset order (contiguous shards)
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from ._utils import collective_device
from ._validation import check_choice, check_int

__all__ = [
    "get_rank", "get_world_size", "get_local_rank", "is_distributed", "is_main_process",
    "init_from_env", "default_device", "shard_indices", "all_gather_cat", "broadcast_object",
    "all_gather_object", "barrier", "destroy",
]


def is_distributed() -> bool:
    """True iff ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def get_local_rank() -> int:
    """Rank on this node from ``LOCAL_RANK`` (set by torchrun), else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed)."""
    return get_rank() == 0


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", get_local_rank() % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


#: collective timeout of :func:`init_from_env` in seconds (NCCL's own default; gloo's is 30 min):
#: a rank whose peer froze fails after this long instead of waiting.  Override per call with
#: ``timeout_s`` or for a launch with the environment variable ``ATOM_PLUGIN_DIST_TIMEOUT``.
DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "ATOM_PLUGIN_DIST_TIMEOUT"


def collective_timeout(timeout_s: float | None = None) -> float:
    """The collective timeout in seconds: ``timeout_s``, else ``$ATOM_PLUGIN_DIST_TIMEOUT``,
    else :data:`DEFAULT_TIMEOUT_S`."""
    from ._validation import check_float

    if timeout_s is None:
        env = os.environ.get(TIMEOUT_ENV, "").strip()
        if not env:
            return DEFAULT_TIMEOUT_S
        try:
            timeout_s = float(env)
        except ValueError:
            raise ValueError(f"${TIMEOUT_ENV}={env!r} is not a number of seconds; set e.g. "
                             f"{TIMEOUT_ENV}=1800.") from None
        return check_float(timeout_s, f"${TIMEOUT_ENV}", low=0.0, low_open=True)
    return check_float(timeout_s, "timeout_s", low=0.0, low_open=True)


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (``env://``).  Does
    nothing and returns ``False`` when ``WORLD_SIZE`` is unset or 1.  Returns ``True`` when
    a process group is (or already was) initialised.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (``nccl`` if CUDA is available, else
            ``gloo``).  With CUDA, the current device is set to ``LOCAL_RANK``.
        timeout_s: collective timeout in seconds (default: ``$ATOM_PLUGIN_DIST_TIMEOUT`` or
            :data:`DEFAULT_TIMEOUT_S` = 600): a collective that a peer never joins (a
            frozen or killed rank) raises after this long instead of hanging for 30 minutes.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support.")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but the environment lacks {missing}; launch with "
            "`torchrun --nproc_per_node=N ...` or set these variables."
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    check_choice(backend, "backend", ("gloo", "nccl", "mpi", "ucc"))
    if backend == "nccl":
        torch.cuda.set_device(default_device())
    import datetime

    timeout = datetime.timedelta(seconds=collective_timeout(timeout_s))
    kwargs: dict[str, Any] = {"timeout": timeout}
    dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return True


def destroy() -> None:
    """Tear down the default process group if one exists.  Drop DistributedDataParallel
    models (e.g. a :class:`~atom_plugin.training.Trainer`) first: a live DDP module's reducer
    still refers to the group, and destroying the group under it could hang at exit (gloo)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None,
                  mode: str = "contiguous") -> list[int]:
    """Indices ``0..n-1`` owned by ``rank`` out of ``world_size`` shards.

    The shards of all ranks partition ``range(n)``: every index appears exactly once (no
    padding duplicates, unlike ``DistributedSampler``); shard sizes differ by at most 1
    and may be empty when ``n < world_size``.

    * ``mode="contiguous"`` (default): rank ``r`` gets ``[r*n//W, (r+1)*n//W)``, so
      concatenating the shards in rank order (what :func:`all_gather_cat` does) restores
      the original order.
    * ``mode="strided"``: rank ``r`` gets ``r, r+W, r+2W, ...``.
    """
    check_int(n, "n", low=0)
    world_size = get_world_size() if world_size is None else check_int(world_size, "world_size", low=1)
    rank = get_rank() if rank is None else check_int(rank, "rank", low=0)
    if rank >= world_size:
        raise ValueError(f"`rank` must be < world_size={world_size}, got {rank}.")
    check_choice(mode, "mode", ("contiguous", "strided"))
    if mode == "strided":
        return list(range(rank, n, world_size))
    return list(range(rank * n // world_size, (rank + 1) * n // world_size))


def all_gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along ``dim`` in rank order.

    Sizes along ``dim`` may differ across ranks (even be 0): each rank pads to the
    largest size, gathers, then trims with the exchanged sizes.  The other dimensions
    and the dtype must agree.  Returns ``tensor`` itself when not distributed.  The
    tensor must live on a device the backend supports (CPU for gloo, CUDA for nccl).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`tensor` must be a torch.Tensor, got {type(tensor).__name__}.")
    if not is_distributed():
        return tensor
    if tensor.dim() == 0:
        tensor = tensor.reshape(1)
    dim = dim % tensor.dim()
    world = get_world_size()
    x = tensor.detach().movedim(dim, 0).contiguous()
    is_bool = x.dtype == torch.bool
    if is_bool:  # gloo lacks bool collectives
        x = x.to(torch.uint8)
    # exchange full shapes so mismatched trailing dimensions give a clear error
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    shapes_l = [s.tolist() for s in shapes]
    if any(s[1:] != shapes_l[0][1:] for s in shapes_l):
        raise ValueError(f"`tensor` shapes differ across ranks beyond dimension {dim}: {shapes_l}.")
    sizes = [s[0] for s in shapes_l]
    max_n = max(sizes)
    if x.shape[0] < max_n:
        pad = x.new_zeros((max_n - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad], 0)
    bufs = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(bufs, x)
    out = torch.cat([b[:k] for b, k in zip(bufs, sizes)], 0)
    if is_bool:
        out = out.to(torch.bool)
    return out.movedim(0, dim)


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (pickled; only for trusted peers)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_gather_object(obj: Any) -> list:
    """List of every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()
