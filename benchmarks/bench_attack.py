"""Benchmark 1: OODPGD vs torchattacks.PGD on the same model, batch and steps.

Fair comparison: the same (K+1)-way model (``Normalize(SmallCNN)`` with a reject head,
eval mode), the same images, ``eps``, ``alpha``, ``steps`` and a uniform random start for
both.  ``torchattacks.PGD`` maximises the cross-entropy of the labels; ``OODPGD`` maximises
the K+1 reject objective (``RejectClass``: ``-log softmax(z)_{K+1}``, paper eq. 118).  Both
take ``steps`` forward + backward passes.  ``OODPGD`` evaluates the input once with its
gradient (the input is its never-worse candidate, and that gradient gives the first update
of the restart), so its only extra pass is one forward at the last iterate per restart;
it also keeps the per-sample best iterate every step (two ``torch.where``) and validates
the input once.  The script times both attacks alternately (A B B A ...) and breaks
OODPGD's overhead down into those parts.

A second table shows threshold-aware early stopping (``threshold=``, ``early_stop=True``):
forwards/backwards counted by the attack (``last_cost``, in images), seconds, and the FPR at
the threshold with and without early stopping (equal by construction).

    python benchmarks/bench_attack.py --device cpu --batch 128 --steps 10 40
    python benchmarks/bench_attack.py --device cuda --batch 256 --steps 10 40 100 --width 64

Reported: seconds per call (min and median of ``--repeats``), images/s, the time ratio
OODPGD / torchattacks.PGD (target <= 1.05 at 10 steps) in wall-clock seconds and, on the
CPU, in this process's CPU seconds (``time.process_time``; robust to other jobs on a shared
machine), the overhead breakdown, and the load average before/after.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import atom_plugin  # noqa: E402,F401
import torchattacks  # noqa: E402
from atom_plugin.attacks import OODPGD  # noqa: E402
from atom_plugin.detectors import RejectClass  # noqa: E402


def _interleaved_cpu(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Like ``_common.interleaved`` (A B B A ...), timing both wall-clock seconds and this
    process's CPU seconds (``time.process_time``): with one intra-op thread on a CPU shared
    with other jobs, CPU seconds are what the attack itself costs, wall seconds include
    waiting for a core."""
    import time

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            w0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {"wall": wall, "cpu": cpu}


def _overhead_parts(atk: OODPGD, det: RejectClass, x: torch.Tensor, steps: int, device, repeats: int) -> dict:
    """Seconds of OODPGD's extra work per call, measured piece by piece."""
    B = x.shape[0]
    f = torch.zeros(B, device=device)
    best_f = torch.zeros(B, device=device)
    best_x = x.clone()

    def keep_best():
        for _ in range(steps):
            atk._keep_best(f, x, best_f, best_x)

    def extra_forwards():  # the forward at the last iterate (one restart)
        atk._value(x)

    def prepare():
        atk._prepare(x)

    def fwd_bwd():  # one step of either attack, for scale
        xr = x.detach().requires_grad_(True)
        loss = det._attack_loss(xr).sum()
        torch.autograd.grad(loss, xr)

    t = C.interleaved({"keep_best": keep_best, "extra_forward": extra_forwards, "prepare": prepare,
                       "fwd_bwd_step": fwd_bwd}, device, repeats)
    return {k: C.summary(v)["median"] for k, v in t.items()}


def _count_passes(model: torch.nn.Module, fn) -> tuple[int, int]:
    """(model forward calls, model forwards that were differentiated) during ``fn()``."""
    n = {"f": 0, "b": 0}

    def hook(mod, inp, out):
        n["f"] += 1
        if out.requires_grad:
            n["b"] += 1

    h = model.register_forward_hook(hook)
    try:
        fn()
    finally:
        h.remove()
    return n["f"], n["b"]


def _early_stop_rows(args, det: RejectClass, device, g: torch.Generator) -> list[dict]:
    """OODPGD with a threshold, with and without early stopping: cost and FPR."""
    B = args.batch[0]
    x = torch.rand(B, 3, 32, 32, generator=g).to(device)
    with torch.no_grad():
        s = det.score(x)
    rows = []
    for q in args.es_quantiles:
        thr = torch.quantile(s, q).item()  # a fraction q of the images is accepted before the attack
        for steps in args.steps:
            mk = lambda es: OODPGD(det, eps=args.es_eps, alpha=args.alpha, steps=steps, seed=0,  # noqa: E731
                                   threshold=thr, early_stop=es)
            full, early = mk(False), mk(True)
            t = C.interleaved({"full": lambda: full(x), "early_stop": lambda: early(x)}, device,
                              max(3, args.repeats // 2), warmup=0)
            a_full, a_es = full(x), early(x)
            with torch.no_grad():
                fpr_full = (det.score(a_full) <= thr).float().mean().item()
                fpr_es = (det.score(a_es) <= thr).float().mean().item()
            rows.append({"batch": B, "steps": steps, "eps": args.es_eps, "accepted_before": q, "fpr_full": fpr_full,
                         "fpr_early_stop": fpr_es, "forwards_full": full.last_cost["forwards"],
                         "forwards_early_stop": early.last_cost["forwards"],
                         "backwards_full": full.last_cost["backwards"],
                         "backwards_early_stop": early.last_cost["backwards"],
                         "s_full_median": C.summary(t["full"])["median"],
                         "s_early_stop_median": C.summary(t["early_stop"])["median"]})
    return rows


def run(args) -> dict:
    device = C.setup(args)
    K = 10
    model = C.make_model(K, args.width, device, reject=True, seed=args.seed)
    det = RejectClass(model).eval()
    g = torch.Generator().manual_seed(args.seed)
    rows, parts_rows = [], []
    for B in args.batch:
        x = torch.rand(B, 3, 32, 32, generator=g).to(device)
        labels = torch.randint(0, K + 1, (B,), generator=g).to(device)
        for steps in args.steps:
            ours = OODPGD(det, eps=args.eps, alpha=args.alpha, steps=steps, random_start=True, restarts=1)
            ref = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=steps, random_start=True)
            fns = {"OODPGD": lambda: ours(x), "torchattacks.PGD": lambda: ref(x, labels)}
            if device.type == "cpu":
                both = _interleaved_cpu(fns, args.repeats)
                t, tc = both["wall"], both["cpu"]
            else:
                t, tc = C.interleaved(fns, device, args.repeats, warmup=1), None
            s_ours, s_ref = C.summary(t["OODPGD"]), C.summary(t["torchattacks.PGD"])
            ratio_med = s_ours["median"] / s_ref["median"]
            ratio_min = s_ours["min"] / s_ref["min"]
            cpu_cols = {}
            if tc is not None:
                c_ours, c_ref = C.summary(tc["OODPGD"]), C.summary(tc["torchattacks.PGD"])
                paired = sorted(a / b for a, b in zip(tc["OODPGD"], tc["torchattacks.PGD"]))
                cpu_cols = {"cpu_ratio_median": c_ours["median"] / c_ref["median"],
                            "cpu_ratio_min": c_ours["min"] / c_ref["min"],
                            "cpu_ratio_paired_median": paired[len(paired) // 2],
                            "cpu_target_met": bool(c_ours["median"] / c_ref["median"] <= 1.05),
                            "cpu_times_oodpgd": tc["OODPGD"], "cpu_times_pgd": tc["torchattacks.PGD"]}
            counts = {}
            for name, fn in (("oodpgd", lambda: ours(x)), ("pgd", lambda: ref(x, labels))):
                counts[name] = _count_passes(model, fn)
            parts = _overhead_parts(ours, det, x, steps, device, max(3, args.repeats))
            predicted = (parts["keep_best"] + parts["extra_forward"] + parts["prepare"]) / (steps * parts["fwd_bwd_step"])
            rows.append({
                "batch": B, "steps": steps,
                "oodpgd_s": s_ours["median"], "pgd_s": s_ref["median"],
                "oodpgd_img_s": B / s_ours["median"], "pgd_img_s": B / s_ref["median"],
                "ratio": ratio_med, "ratio_min": ratio_min,
                "target_met": bool(ratio_med <= 1.05),
                "oodpgd_forwards": counts["oodpgd"][0], "oodpgd_backwards": counts["oodpgd"][1],
                "pgd_forwards": counts["pgd"][0], "pgd_backwards": counts["pgd"][1],
                "times_oodpgd": t["OODPGD"], "times_pgd": t["torchattacks.PGD"], **cpu_cols,
            })
            parts_rows.append({
                "batch": B, "steps": steps,
                "fwd_bwd_step_ms": 1e3 * parts["fwd_bwd_step"],
                "extra_forward_ms": 1e3 * parts["extra_forward"],
                "keep_best_all_steps_ms": 1e3 * parts["keep_best"],
                "prepare_ms": 1e3 * parts["prepare"],
                "predicted_overhead": predicted,
            })
    es_rows = _early_stop_rows(args, det, device, g) if args.es_quantiles else []
    return {
        "benchmark": "attack",
        "settings": {"batch": args.batch, "steps": args.steps, "eps": args.eps, "alpha": args.alpha,
                     "width": args.width, "repeats": args.repeats, "num_classes": K, "random_start": True,
                     "model": f"Normalize(SmallCNN(width={args.width})) + reject head (K+1 = {K + 1})",
                     "oodpgd_objective": "RejectClass.attack_loss = reject_nll (eq. 118)",
                     "pgd_objective": "cross-entropy on random labels"},
        "results": rows,
        "overhead": parts_rows,
        "early_stop": es_rows,
    }


def main(argv=None) -> int:
    p = C.parser(__doc__, "attack.json")
    p.add_argument("--batch", type=int, nargs="+", default=[128])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--alpha", type=float, default=1 / 255)
    p.add_argument("--width", type=int, default=16, help="SmallCNN width (default 16)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--es-quantiles", type=float, nargs="*", default=[0.05, 0.3],
                   help="early-stopping table: thresholds at these quantiles of the clean scores")
    p.add_argument("--es-eps", type=float, default=0.5 / 255,
                   help="early-stopping table: eps (small, so that not every image gets accepted)")
    args = p.parse_args(argv)
    C.setup(args)
    info = C.machine_info(args.device)
    res = run(args)
    path = C.write_json(args.out, res, info)
    if not args.quiet:
        print(C.machine_line(info))
        print(C.table(res["results"], ["batch", "steps", "oodpgd_s", "pgd_s", "oodpgd_img_s", "pgd_img_s",
                                       "ratio", "ratio_min", "target_met", "cpu_ratio_median", "cpu_ratio_min",
                                       "cpu_ratio_paired_median", "cpu_target_met", "oodpgd_forwards", "pgd_forwards",
                                       "oodpgd_backwards", "pgd_backwards"]))
        print()
        print("OODPGD overhead breakdown (per call; predicted_overhead = extra / (steps * fwd_bwd_step)):")
        print(C.table(res["overhead"]))
        print()
        print("Threshold-aware early stopping (OODPGD, threshold = quantile of the clean scores):")
        print(C.table(res["early_stop"]))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
