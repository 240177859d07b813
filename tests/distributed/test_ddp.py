"""Two CPU processes with gloo: DDP training, sharded mining, identical results on both ranks."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = 0.4 * torch.rand(40, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    a = 0.6 + 0.4 * torch.rand(70, 3, 32, 32, generator=g)
    return TensorDataset(x, y), TensorDataset(a, torch.full((70,), -1))


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import faulthandler

    faulthandler.dump_traceback_later(280, exit=True)  # a hang becomes a traceback on stderr
    from atom_plugin import distributed as D
    from atom_plugin.models import Normalize, SmallCNN, with_reject_head
    from atom_plugin.training import TrainConfig, Trainer

    assert D.init_from_env(timeout_s=90)  # a desynchronised collective fails instead of hanging
    tr = None
    try:
        ds, aux = _data()
        torch.manual_seed(0)
        model = with_reject_head(Normalize(SmallCNN(10, width=4), [0.5] * 3, [0.25] * 3), 10)
        cfg = TrainConfig(method="atom", epochs=2, batch_size=8, outlier_batch_size=16, pool_size=61, mined_size=20,
                          q=0.1, steps=2, progress=False, score_batch_size=16)
        tr = Trainer(model, ds, aux, cfg, out_dir=os.path.join(out_dir, "run"))
        assert isinstance(tr.model, torch.nn.parallel.DistributedDataParallel)
        assert len(tr._id_indices(0)) == 20  # 40 ID images sharded over 2 ranks
        tr.fit()
        mined = tr.miner.mine(tr.module, epoch=5)
        torch.save({"state": model.state_dict(), "mined": mined.indices, "scores": mined.scores,
                    "history": [h["counts"] for h in tr.miner.history[:2]],
                    "id0": tr._id_indices(0)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        del tr  # the DDP model and its reducer go before the process group
        D.destroy()


def _launch(out_dir: str) -> None:
    mp.spawn(_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)


def test_ddp_two_processes_gloo(tmp_path):
    # launched from a fresh interpreter: spawning from inside a long pytest session was seen to hang
    import subprocess
    import sys

    res = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=330)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    # every rank selects the same outliers (scores gathered from both shards)
    assert torch.equal(r0["mined"], r1["mined"]) and len(r0["mined"]) == 20
    assert torch.equal(r0["scores"], r1["scores"])
    assert r0["history"] == r1["history"] and sum(r0["history"][0]) == 61
    # the ID shards are disjoint and cover the data
    assert set(r0["id0"].tolist()).isdisjoint(r1["id0"].tolist())
    assert sorted(r0["id0"].tolist() + r1["id0"].tolist()) == list(range(40))
    # identical final weights and BatchNorm statistics
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # the checkpoint (rank 0) holds both ranks' RNG states
    from atom_plugin.training import load_checkpoint

    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == 2 and len(ck["rng"]) == 2
    assert torch.equal(ck["model"]["model.fc.weight"], r0["state"]["model.fc.weight"])


if __name__ == "__main__":
    import sys

    _launch(sys.argv[1])
