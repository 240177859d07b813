"""One script that exercises every CUDA path of atom_plugin and prints a pass/fail table.

Run it the day a GPU is available (target: under 5 minutes on one GPU)::

    python benchmarks/gpu_check.py                # device cuda (or --device cuda:1)
    python benchmarks/gpu_check.py --dry-run      # every check on the CPU at tiny size (CI)

Checks (each timed; on CUDA with its peak GPU memory):

1. ``corruptions``: every corruption of ``ALL_CORRUPTIONS`` at every severity on the GPU vs
   the CPU, with the same random draws (drawn on the CPU, copied to the device), agreement
   ``max |delta| <= 1/255``;
2. ``OODPGD`` / ``OODAPGD``: the mean objective gain (``attack_loss(adv) - attack_loss(x)``)
   on the GPU vs the CPU; the random starts differ between devices, so the gap must lie
   within the CPU's own seed-to-seed noise (3x, plus 5% of the gain);
3. ``train step``: one ATOM epoch (mining, PGD, train step) in float32; ``AMP fp16``
   (finite loss, ``GradScaler`` enabled with a finite positive scale) and ``AMP bf16``;
4. ``pinned loading``: the trainer's DataLoader returns pinned host batches on CUDA;
5. ``mining``: ``OutlierMiner.mine`` on the GPU vs the CPU (scores within 1e-4, same window);
6. ``DDP step``: a one-process NCCL process group, a ``DistributedDataParallel``
   forward/backward/SGD step and an all-gather (gloo on the CPU in ``--dry-run``);
7. ``bench 1-3``: the throughput ratios of ``bench_attack`` (OODPGD / torchattacks.PGD),
   ``bench_corruptions`` (torch backend vs ``imagecorruptions``) and ``bench_mining``
   (plain forward loop / ``OutlierMiner.mine``) on the device, with their targets.

``--dry-run`` runs every check on the CPU at tiny size (device-vs-CPU comparisons compare
the CPU with itself, so they exercise the code, not the GPU); CUDA-only checks (AMP,
pinned memory) are reported as ``skip``.  Exit code 0 when every check that ran passed, 1
otherwise.  The table is printed and written as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import atom_plugin  # noqa: E402,F401

PASS, FAIL, SKIP = "pass", "fail", "skip"


class _HostDraws:
    """The corruptions' random draws (same methods as ``TorchDraws``), drawn from a CPU
    generator and copied to ``device``: the same numbers on every device."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self.dtype = torch.float32

    def uniform(self, shape, low: float, high: float) -> torch.Tensor:
        return (torch.rand(shape, generator=self.g) * (high - low) + low).to(self.device)

    def normal(self, shape, loc: float, scale: float) -> torch.Tensor:
        return (torch.randn(shape, generator=self.g) * scale + loc).to(self.device)

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        return torch.poisson(rate.detach().cpu(), generator=self.g).to(rate.device)

    def randint(self, high: torch.Tensor) -> torch.Tensor:
        h = high.cpu()
        u = torch.rand(h.shape, generator=self.g, dtype=torch.float64)
        return torch.minimum((u * h).long(), h - 1).to(high.device)


def _model(width: int, device, reject: bool = True, seed: int = 0) -> torch.nn.Module:
    return C.make_model(10, width=width, device=device, reject=reject, seed=seed)


# ----------------------------------------------------------------------------- checks
def check_corruptions(dev: torch.device, size: dict) -> tuple[str, str]:
    from atom_plugin.corruptions import ALL_CORRUPTIONS
    from atom_plugin.corruptions.torch_backend import corrupt_torch

    x = torch.rand(size["images"], 3, 32, 32, generator=torch.Generator().manual_seed(0))
    worst, worst_at, over = 0.0, "", []
    for i, name in enumerate(ALL_CORRUPTIONS):
        for sev in size["severities"]:
            seed = 1000 * i + sev
            ref = corrupt_torch(x, name, sev, draws=_HostDraws(seed, torch.device("cpu")))
            got = corrupt_torch(x.to(dev), name, sev, draws=_HostDraws(seed, dev)).cpu()
            d = float((got - ref).abs().max())
            if d > worst:
                worst, worst_at = d, f"{name}-{sev}"
            if d > 1 / 255 + 1e-6:
                over.append(f"{name}-{sev}")
    n = len(ALL_CORRUPTIONS) * len(size["severities"])
    detail = f"{n} variants x {size['images']} images; max |delta| = {worst * 255:.3f}/255"
    detail += f" ({worst_at})" if worst_at else ""
    if over:
        return FAIL, detail + f"; over 1/255: {', '.join(over[:6])}{' ...' if len(over) > 6 else ''}"
    return PASS, detail


def _gain(attack_cls, det, x: torch.Tensor, seed: int, steps: int) -> float:
    atk = attack_cls(det, eps=8 / 255, steps=steps, seed=seed)
    adv = atk(x)
    with torch.no_grad():
        return float((det.attack_loss(adv) - det.attack_loss(x)).mean())


def check_attack(attack_name: str, dev: torch.device, size: dict) -> tuple[str, str]:
    from atom_plugin.attacks import OODAPGD, OODPGD
    from atom_plugin.detectors import RejectClass

    cls = {"OODPGD": OODPGD, "OODAPGD": OODAPGD}[attack_name]
    x = torch.rand(size["attack_images"], 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cpu_det = RejectClass(_model(size["width"], "cpu"))
    dev_det = RejectClass(_model(size["width"], dev))
    g_cpu = [_gain(cls, cpu_det, x, s, size["attack_steps"]) for s in (0, 1, 2)]
    g_dev = _gain(cls, dev_det, x.to(dev), 0, size["attack_steps"])
    noise = max(abs(a - b) for a in g_cpu for b in g_cpu)
    ref = statistics.mean(g_cpu)
    tol = 3 * noise + 0.05 * abs(ref) + 1e-6
    detail = (f"mean gain {dev.type} {g_dev:.4f} vs cpu {ref:.4f} (cpu seeds: {', '.join(f'{g:.4f}' for g in g_cpu)}; "
              f"tolerance {tol:.4f})")
    ok = g_dev > 0 and ref > 0 and abs(g_dev - ref) <= tol
    return (PASS if ok else FAIL), detail


def _train_data(size: dict):
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(2)
    n = size["train_images"]
    x = 0.4 * torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    aux = 0.6 + 0.4 * torch.rand(4 * n, 3, 32, 32, generator=g)
    return TensorDataset(x, y), TensorDataset(aux, torch.full((4 * n,), -1))


def _trainer(dev: torch.device, size: dict, **cfg):
    from atom_plugin.training import TrainConfig, Trainer

    ds, aux = _train_data(size)
    n = size["train_images"]
    base = dict(method="atom", epochs=1, batch_size=max(2, n // 4), outlier_batch_size=max(2, n // 2),
                pool_size=2 * n, mined_size=n, q=0.125, progress=False, log_every=1)
    base.update(cfg)
    return Trainer(_model(size["width"], dev), ds, aux, TrainConfig(**base), device=dev)


def check_train_step(dev: torch.device, size: dict, amp: str | None = None) -> tuple[str, str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp on the CPU warns; only reached in --dry-run via fp32
        tr = _trainer(dev, size, amp=amp)
    rec = tr.train_epoch(0)
    loss = float(rec["loss"])
    detail = f"loss {loss:.4f}, {tr.step} steps"
    ok = torch.isfinite(torch.tensor(loss)).item()
    if amp == "fp16":
        scale = float(tr.scaler.get_scale()) if tr.scaler.is_enabled() else float("nan")
        detail += f", GradScaler enabled={tr.scaler.is_enabled()} scale={scale:g}"
        ok = ok and tr.scaler.is_enabled() and scale > 0 and scale == scale
    if amp is not None:
        detail += f", autocast {tr.amp_dtype}"
        ok = ok and tr.amp_dtype is not None
    return (PASS if ok else FAIL), detail


def check_pinned(dev: torch.device, size: dict) -> tuple[str, str]:
    tr = _trainer(dev, size, method="oe")
    steps, batches = tr._batches(0, torch.arange(len(tr.aux_set)))
    (x_in, _), (x_out, _) = next(iter(batches))
    ok = x_in.is_pinned() and x_out.is_pinned()
    return (PASS if ok else FAIL), f"ID batch pinned={x_in.is_pinned()}, outlier batch pinned={x_out.is_pinned()}"


def check_mining(dev: torch.device, size: dict) -> tuple[str, str]:
    from atom_plugin.mining import OutlierMiner

    _, aux = _train_data(size)
    n = len(aux)
    res = {}
    for d in ("cpu", dev):
        miner = OutlierMiner(aux, n, n // 4, 0.25, batch_size=size["score_batch"], seed=3)
        res[str(d)] = miner.mine(_model(size["width"], d), 0, device=d)
    a, b = res["cpu"], res[str(dev)]
    same = len(set(a.indices.tolist()) & set(b.indices.tolist())) / len(a.indices)
    diff = float((a.scores - b.scores).abs().max())
    ok = diff <= 1e-4 and same >= 0.99
    return (PASS if ok else FAIL), f"N={n}: max score diff {diff:.2e}, same selection {100 * same:.1f}%"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(dev: torch.device, size: dict) -> tuple[str, str]:
    import torch.distributed as dist

    from atom_plugin import distributed as dist_utils

    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():
        return FAIL, "a process group is already initialised"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = _model(size["width"], dev).train()
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda"
                                                        else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        x = torch.rand(8, 3, 32, 32, device=dev)
        y = torch.randint(0, 11, (8,), device=dev)
        before = [p.detach().clone() for p in model.parameters()]
        loss = torch.nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        t = torch.arange(3.0, device=dev)
        gathered = dist_utils.all_gather_cat(t)
        ok = moved and torch.isfinite(loss).item() and torch.equal(gathered.cpu(), t.cpu())
        return (PASS if ok else FAIL), f"backend {backend}, loss {loss.item():.4f}, weights moved={moved}, " \
                                      f"all_gather ok={torch.equal(gathered.cpu(), t.cpu())}"
    finally:
        dist.destroy_process_group()


def _bench(name: str, argv: list[str]) -> dict:
    import importlib

    mod = importlib.import_module(name)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp) / f"{name}.json"
        code = mod.main(argv + ["--out", str(out), "--quiet"] if name != "bench_corruptions"
                        else argv + ["--out", str(out)])
        if code != 0:
            raise RuntimeError(f"{name} exited with {code}")
        return json.loads(out.read_text())


def check_bench_attack(dev: torch.device, size: dict) -> tuple[str, str]:
    doc = _bench("bench_attack", ["--device", str(dev)] + size["bench_attack"])
    parts = [f"steps {r['steps']}: OODPGD/PGD time {r['ratio']:.3f} (target <= 1.05: "
             f"{'met' if r['ratio'] <= 1.05 else 'missed'})" for r in doc["results"]]
    return PASS, "; ".join(parts)


def check_bench_corruptions(dev: torch.device, size: dict) -> tuple[str, str]:
    doc = _bench("bench_corruptions", ["--device", str(dev)] + size["bench_corruptions"])
    parts = []
    for run in doc["runs"]:
        for key in ("75", "95"):
            r = run[key]
            parts.append(f"{key} variants batch {run.get('batch', '?')}: {r['speedup_vs_reference']:.1f}x "
                         f"imagecorruptions (target >= 20x: {'met' if r['speedup_vs_reference'] >= 20 else 'missed'})")
    return PASS, "; ".join(parts)


def check_bench_mining(dev: torch.device, size: dict) -> tuple[str, str]:
    doc = _bench("bench_mining", ["--device", str(dev)] + size["bench_mining"])
    thr = doc["throughput"][0]
    ratio = thr["ratio_vs_loader"]
    return PASS, (f"N={thr['N']}: plain loop / mine {ratio:.3f} (target >= 0.9: {'met' if ratio >= 0.9 else 'missed'})")


# ----------------------------------------------------------------------------- driver
SIZES = {
    "gpu": dict(images=16, severities=(1, 2, 3, 4, 5), attack_images=64, attack_steps=20, width=16,
                train_images=256, score_batch=256,
                bench_attack=["--batch", "256", "--steps", "10", "40", "--width", "32", "--repeats", "3"],
                bench_corruptions=["--batch", "256", "--ref-images", "8", "--repeats", "1", "--no-accuracy"],
                bench_mining=["--throughput-pool", "20000", "--pool", "20000", "--batch-size", "1024",
                              "--sweep", "256", "1024", "--width", "32", "--repeats", "3"]),
    "dry": dict(images=1, severities=(1, 5), attack_images=4, attack_steps=3, width=2,
                train_images=16, score_batch=16,
                bench_attack=["--batch", "4", "--steps", "2", "--width", "2", "--repeats", "1", "--threads", "1"],
                bench_corruptions=["--batch", "2", "--ref-images", "1", "--repeats", "1", "--no-accuracy",
                                   "--threads", "1"],
                bench_mining=["--throughput-pool", "64", "--pool", "64", "--batch-size", "32", "--width", "2",
                              "--mem-width", "2", "--sweep", "32", "--repeats", "1", "--threads", "1"]),
}


def checks(size: dict) -> list[tuple[str, Callable, bool]]:
    """``(name, fn(dev, size), cuda_only)`` in run order."""
    return [
        ("corruptions: all on device vs CPU (<= 1/255)", check_corruptions, False),
        ("OODPGD: objective gain device vs CPU", lambda d, s: check_attack("OODPGD", d, s), False),
        ("OODAPGD: objective gain device vs CPU", lambda d, s: check_attack("OODAPGD", d, s), False),
        ("train step: ATOM epoch, float32", lambda d, s: check_train_step(d, s, None), False),
        ("train step: AMP fp16 + GradScaler", lambda d, s: check_train_step(d, s, "fp16"), True),
        ("train step: AMP bf16", lambda d, s: check_train_step(d, s, "bf16"), True),
        ("pinned host memory in the trainer's loaders", check_pinned, True),
        ("mining: device vs CPU", check_mining, False),
        ("DDP step: 1 process (NCCL on CUDA)", check_ddp, False),
        ("bench 1: OODPGD vs torchattacks.PGD", check_bench_attack, False),
        ("bench 2: corruptions vs imagecorruptions", check_bench_corruptions, False),
        ("bench 3: mining vs plain loop", check_bench_mining, False),
    ]


def run_checks(dev: torch.device, dry: bool, only: list[str] | None = None) -> list[dict[str, Any]]:
    size = SIZES["dry" if dry else "gpu"]
    rows = []
    for name, fn, cuda_only in checks(size):
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        row: dict[str, Any] = {"check": name, "status": SKIP, "seconds": 0.0, "peak_gpu_MB": None, "detail": ""}
        if cuda_only and dev.type != "cuda":
            row["detail"] = "CUDA only"
            rows.append(row)
            continue
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        try:
            row["status"], row["detail"] = fn(dev, size)
        except Exception as err:  # report, keep going
            row["status"] = FAIL
            tb = traceback.extract_tb(err.__traceback__)[-1]
            row["detail"] = f"{type(err).__name__}: {err} ({Path(tb.filename).name}:{tb.lineno})"
        C.sync(dev)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if dev.type == "cuda":
            row["peak_gpu_MB"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
        rows.append(row)
        print(f"[{row['status']:4}] {name} ({row['seconds']:.1f} s)", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="the GPU to check (default cuda)")
    p.add_argument("--dry-run", action="store_true", help="every check on the CPU at tiny size (CUDA-only: skip)")
    p.add_argument("--only", nargs="+", metavar="WORD", help="run only checks whose name contains WORD")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/gpu_check[_dryrun].json)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device("cpu" if args.dry_run else args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available; run with --dry-run to check the script on the CPU.",
              file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = C.machine_info(dev)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        rows = run_checks(dev, args.dry_run, args.only)
    finally:
        torch.set_num_threads(threads)  # the bench scripts may set their own
    total = time.perf_counter() - t0
    failed = [r for r in rows if r["status"] == FAIL]
    doc = {"benchmark": "gpu_check", "dry_run": args.dry_run, "total_s": round(total, 1), "results": rows,
           "peak_gpu_MB": round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1) if dev.type == "cuda" else None,
           "passed": not failed}
    out = args.out or str(C.RESULTS_DIR / ("gpu_check_dryrun.json" if args.dry_run else "gpu_check.json"))
    path = C.write_json(out, doc, info)
    print()
    print(C.machine_line(info))
    print(C.table(rows, ["check", "status", "seconds", "peak_gpu_MB", "detail"], floatfmt=".3g"))
    n = {s: sum(r["status"] == s for r in rows) for s in (PASS, FAIL, SKIP)}
    print(f"\n{n[PASS]} passed, {n[FAIL]} failed, {n[SKIP]} skipped in {total:.0f} s"
          f"{' (dry run on the CPU)' if args.dry_run else ''}; peak GPU memory "
          f"{doc['peak_gpu_MB'] if doc['peak_gpu_MB'] is not None else 'n/a'} MB\nwrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
