"""atom_plugin.distributed: single-process no-ops and a real 2-process gloo run."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from atom_plugin import distributed as D


def test_single_process_noops():
    assert D.get_rank() == 0 and D.get_world_size() == 1
    assert not D.is_distributed() and D.is_main_process()
    x = torch.arange(5)
    assert D.all_gather_cat(x) is x
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    assert D.all_gather_object(3) == [3]
    D.barrier()
    assert D.shard_indices(7) == list(range(7))


def test_init_from_env_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_PORT"):
        D.init_from_env()


@pytest.mark.parametrize("mode", ["contiguous", "strided"])
@pytest.mark.parametrize("n,w", [(0, 3), (1, 4), (10, 3), (11, 4), (64, 2), (5, 5)])
def test_shards_partition(n, w, mode):
    shards = [D.shard_indices(n, r, w, mode=mode) for r in range(w)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # each index exactly once, no padding duplicates
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    if mode == "contiguous":
        assert [i for s in shards for i in s] == list(range(n))


def test_shard_errors():
    with pytest.raises(ValueError, match="rank"):
        D.shard_indices(4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="mode"):
        D.shard_indices(4, 0, 2, mode="random")
    with pytest.raises(ValueError, match="n"):
        D.shard_indices(-1, 0, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert D.init_from_env() is True
    try:
        assert D.get_rank() == rank and D.get_world_size() == world and D.is_distributed()
        n = 7  # unequal shards: 3 and 4
        idx = D.shard_indices(n)
        local = torch.tensor(idx, dtype=torch.float32) * 10
        gathered = D.all_gather_cat(local)
        # 2-D, bool, and an empty shard on rank 0
        mat = torch.full((rank + 1, 3), float(rank))
        gmat = D.all_gather_cat(mat)
        flags = torch.tensor([rank == 1] * (rank * 2), dtype=torch.bool)
        gflags = D.all_gather_cat(flags)
        obj = D.broadcast_object({"seed": 123} if rank == 0 else None)
        objs = D.all_gather_object(rank * 2)
        D.barrier()
        torch.save({"gathered": gathered, "gmat": gmat, "gflags": gflags, "obj": obj, "objs": objs},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        D.destroy()


def test_two_process_gloo(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        res = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert torch.equal(res["gathered"], torch.arange(7, dtype=torch.float32) * 10)
        assert res["gmat"].shape == (3, 3)
        assert res["gmat"][:, 0].tolist() == [0.0, 1.0, 1.0]
        assert res["gflags"].dtype == torch.bool and res["gflags"].tolist() == [True, True]
        assert res["obj"] == {"seed": 123}
        assert res["objs"] == [0, 2]
