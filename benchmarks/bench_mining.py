"""Benchmark 3: outlier-mining throughput and peak memory vs the pool size N.

Throughput (``--repeats`` alternating repeats, medians): ``OutlierMiner.mine`` (draw N candidates, score them in eval mode under
``inference_mode``, sort, select ``[qN, qN + n)``, histogram) vs two plain
``torch.inference_mode`` forward loops over **the same candidates** and batch size:

* ``loader``: ``DataLoader(Subset(aux, candidates))`` + forward (what a user would write);
* ``get_batch``: ``aux.get_batch(chunk)`` + forward (vectorised batch reads, no per-item
  ``__getitem__``/collate).

Both plain loops feed the model the layout the miner uses (NHWC on the CPU, see
``atom_plugin.mining.channels_last_helps``), so the ratio measures the miner's overhead.

Ratio = plain seconds / mining seconds (target >= 0.9 against ``loader``).

Memory: peak resident set size during ``mine`` minus the resident size just before it
(Linux: freed heap memory is first returned to the OS with ``malloc_trim`` so the
baseline holds no reusable pages, and the peak is reset through ``/proc/self/clear_refs``; on CUDA also
``torch.cuda.max_memory_allocated``), for N in ``--pool`` (default 2k, 8k, 32k), next to
the size N float32 images would take.  The auxiliary set is generated lazily (each image
computed from its index on access, nothing stored), so only what mining itself keeps
shows up: it must grow with N scalars (indices, scores), not N images.

    python benchmarks/bench_mining.py --device cpu --pool 2000 8000 32000
    python benchmarks/bench_mining.py --device cuda --pool 50000 200000 400000 --width 64
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import atom_plugin  # noqa: E402,F401
from atom_plugin.mining import OutlierMiner  # noqa: E402


class LazyOutliers(Dataset):
    """``size`` deterministic 3x32x32 images in [0, 1], computed from the index on access
    (a shifted, scaled copy of one of 64 stored base textures; numpy, no torch ops per
    item): nothing per image is stored, so memory measurements see only what the consumer
    keeps."""

    def __init__(self, size: int, seed: int = 0, image_size: int = 32) -> None:
        self.size = int(size)
        g = torch.Generator().manual_seed(seed)
        base = torch.rand(64, 3, image_size // 4, image_size // 4, generator=g)
        base = torch.nn.functional.interpolate(base, size=(image_size, image_size), mode="bilinear",
                                               align_corners=False)
        self.base = base.numpy().astype(np.float32)
        self.s = image_size

    def __len__(self) -> int:
        return self.size

    def _params(self, idx: np.ndarray):
        h = (idx.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2 ** 32)
        return (h % 64).astype(np.int64), ((h >> 6) % self.s).astype(np.int64), \
            ((h >> 11) % self.s).astype(np.int64), (0.5 + ((h >> 16) % 128) / 255.0).astype(np.float32)

    def get_batch(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        b, dy, dx, gain = self._params(idx)
        ar = np.arange(self.s)
        rows = (ar[None, :] + dy[:, None]) % self.s                              # (B, S)
        cols = (ar[None, :] + dx[:, None]) % self.s                              # (B, S)
        imgs = self.base[b[:, None, None, None], np.arange(3)[None, :, None, None],
                         rows[:, None, :, None], cols[:, None, None, :]]         # (B, 3, S, S)
        imgs *= gain[:, None, None, None]
        np.clip(imgs, 0.0, 1.0, out=imgs)
        return torch.from_numpy(imgs)

    def __getitem__(self, i: int):
        return self.get_batch([int(i)])[0], -1


def _layout(model, device):
    """The input layout the miner uses (NHWC on the CPU for conv models), so the plain
    loops are the same forwards, not a slower baseline."""
    from atom_plugin.mining import channels_last_helps

    if channels_last_helps(model, device):
        return lambda x: x.contiguous(memory_format=torch.channels_last)
    return lambda x: x


def _plain_loader(model, ds, cand, bs, device):
    loader = DataLoader(Subset(ds, cand.tolist()), batch_size=bs, shuffle=False)
    fmt = _layout(model, device)
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(model(fmt(x.to(device))))
    return len(out)


def _plain_get_batch(model, ds, cand, bs, device):
    fmt = _layout(model, device)
    n = 0
    with torch.inference_mode():
        for chunk in cand.split(bs):
            model(fmt(ds.get_batch(chunk).to(device)))
            n += 1
    return n


def _memory(model, ds, pool, select, bs, device) -> dict:
    miner = OutlierMiner(ds, pool, select, 0.0, num_classes=10, batch_size=bs, seed=1)
    C.release_freed_memory()
    before = C.rss_bytes()
    ok = C.reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    res = miner.mine(model, 0, device=device)
    peak = C.peak_rss_bytes()
    rec = {
        "N": pool, "n": select,
        "peak_rss_delta_MB": None if (before is None or peak is None or not ok) else (peak - before) / 2 ** 20,
        "rss_before_MB": None if before is None else before / 2 ** 20,
        "N_images_float32_MB": pool * 3 * 32 * 32 * 4 / 2 ** 20,
        "N_scalars_MB": pool * (8 + 4) / 2 ** 20,  # int64 index + float32 score per candidate
        "peak_reset": ok,
        "selected": int(res.indices.numel()),
    }
    if device.type == "cuda":
        rec["cuda_peak_delta_MB"] = (torch.cuda.max_memory_allocated(device) - cuda_before) / 2 ** 20
    return rec


def run(args) -> dict:
    device = C.setup(args)
    model = C.make_model(10, args.width, device, reject=True, seed=args.seed)
    ds = LazyOutliers(max(max(args.pool), args.throughput_pool), seed=args.seed)
    bs = args.batch_size

    # throughput: the same candidates, the same batch size
    N = args.throughput_pool
    miner = OutlierMiner(ds, N, max(1, N // 4), 0.0, num_classes=10, batch_size=bs, seed=args.seed)
    cand = miner.candidates(0)
    fns = {
        "mine": lambda: miner.mine(model, 0, device=device),
        "plain_loader": lambda: _plain_loader(model, ds, cand, bs, device),
        "plain_get_batch": lambda: _plain_get_batch(model, ds, cand, bs, device),
    }
    t = C.interleaved(fns, device, args.repeats, warmup=1)
    med = {k: C.summary(v)["median"] for k, v in t.items()}
    thr = [{
        "N": N, "batch_size": bs,
        "mine_s": med["mine"], "plain_loader_s": med["plain_loader"], "plain_get_batch_s": med["plain_get_batch"],
        "mine_img_s": N / med["mine"],
        "ratio_vs_loader": med["plain_loader"] / med["mine"],
        "ratio_vs_get_batch": med["plain_get_batch"] / med["mine"],
        "target_met": bool(med["plain_loader"] / med["mine"] >= 0.9),
    }]

    # mining throughput vs the scoring batch size (TrainConfig.score_batch_size)
    sweep = []
    for sbs in args.sweep:
        m = OutlierMiner(ds, N, max(1, N // 4), 0.0, num_classes=10, batch_size=sbs, seed=args.seed)
        m.mine(model, 0, device=device)
        ts = [C.timed(lambda: m.mine(model, 0, device=device), device)[0] for _ in range(max(1, args.repeats - 1))]
        sweep.append({"score_batch_size": sbs, "mine_s": C.summary(ts)["median"],
                      "mine_img_s": N / C.summary(ts)["median"]})

    # memory: a narrower model by default (the bookkeeping, not the model, is measured)
    mem_model = C.make_model(10, args.mem_width, device, reject=True, seed=args.seed)
    _memory(mem_model, ds, min(args.pool), max(1, min(args.pool) // 4), bs, device)  # warm-up (allocator)
    mem = [_memory(mem_model, ds, n, max(1, n // 4), bs, device) for n in args.pool]
    growth = None
    if len(mem) >= 2 and mem[0]["peak_rss_delta_MB"] is not None:
        a, b = mem[0], mem[-1]
        growth = {"delta_MB": b["peak_rss_delta_MB"] - a["peak_rss_delta_MB"], "N_from": a["N"], "N_to": b["N"],
                  "bytes_per_extra_candidate": (b["peak_rss_delta_MB"] - a["peak_rss_delta_MB"]) * 2 ** 20
                  / (b["N"] - a["N"]),
                  "image_bytes": 3 * 32 * 32 * 4}
    return {
        "benchmark": "mining",
        "settings": {"width": args.width, "mem_width": args.mem_width, "batch_size": bs, "throughput_pool": N, "pool": args.pool,
                     "repeats": args.repeats, "dataset": "LazyOutliers (images computed from the index)",
                     "model": f"Normalize(SmallCNN(width={args.width})) + reject head"},
        "throughput": thr,
        "batch_sweep": sweep,
        "times": t,
        "memory": mem,
        "memory_growth": growth,
    }


def main(argv=None) -> int:
    p = C.parser(__doc__, "mining.json")
    p.add_argument("--throughput-pool", type=int, default=3072, help="N for the throughput comparison")
    p.add_argument("--pool", type=int, nargs="+", default=[2000, 8000, 32000], help="N values for the memory table")
    p.add_argument("--batch-size", type=int, default=512, help="scoring batch size (TrainConfig.score_batch_size)")
    p.add_argument("--sweep", type=int, nargs="*", default=[64, 128, 512],
                   help="scoring batch sizes for the mining-throughput sweep (empty: skip)")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width for the throughput comparison")
    p.add_argument("--mem-width", type=int, default=4, help="SmallCNN width for the memory table")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    C.setup(args)
    info = C.machine_info(args.device)
    res = run(args)
    path = C.write_json(args.out, res, info)
    if not args.quiet:
        print(C.machine_line(info))
        print(C.table(res["throughput"]))
        if res["batch_sweep"]:
            print()
            print(C.table(res["batch_sweep"]))
        print()
        print(C.table(res["memory"], ["N", "n", "peak_rss_delta_MB", "N_images_float32_MB", "N_scalars_MB"]))
        if res["memory_growth"]:
            gr = res["memory_growth"]
            print(f"\npeak memory grew {gr['delta_MB']:.2f} MB from N={gr['N_from']} to N={gr['N_to']}: "
                  f"{gr['bytes_per_extra_candidate']:.1f} bytes per extra candidate "
                  f"(one float32 image is {gr['image_bytes']} bytes)")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
