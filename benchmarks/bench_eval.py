"""Benchmark 5: full evaluation cost per OOD image, split by task, relative to one forward.

Runs :func:`atom_plugin.evaluation.evaluate` once with the paper's settings (tasks
natural, corruption, linf, compositional; L-inf PGD eps 8/255, 40 steps of 1/255, 1
restart; 15 corruptions x 5 severities) on a K+1 detector (``RejectClass`` on
``Normalize(SmallCNN(width))`` with a reject head) with the embedded benchmark's ID test
digits and OOD set(s).  The attack call and the scoring of every task are timed inside
the evaluation (the module's ``_run_attack`` and its scorer are wrapped by timers; the
evaluation itself is unchanged), and divided by the number of OOD images.  The unit is
the cost of **one forward pass per image** (no-grad forward of the same images at the same
batch size; measured before and after the evaluation, median).

Expected on any device: natural ~1 forward; linf ~ 2 + 40 x (forward + input-gradient
backward) forwards; corruption = 76 forwards + generating 75 corrupted copies;
compositional ~ linf (it starts from the corruption task's search on the same batch).

The model forwards (images through the network, counted by a forward hook, attack steps
included) are counted for the whole evaluation twice: as it runs (the compositional task
reuses the corruption search; attack outputs scored by the attack are not re-scored), and
with that reuse switched off (the previous behaviour); the difference is the work saved.

    python benchmarks/bench_eval.py --device cpu --images 128
    python benchmarks/bench_eval.py --device cuda --images 1000 --batch-size 256 --width 64
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import atom_plugin  # noqa: E402,F401
import atom_plugin.evaluation as E  # noqa: E402
import atom_plugin.evaluation.run as ER  # noqa: E402
import atom_plugin.evaluation.scoring as ES  # noqa: E402
from atom_plugin.data import load_default_benchmark  # noqa: E402
from atom_plugin.detectors import RejectClass  # noqa: E402


def _task_of(atk) -> str:
    if atk is None:
        return "natural"
    name = type(atk).__name__
    if name == "CompositionalAttack":
        return "compositional"
    if name == "CorruptionAttack":
        return "corruption"
    if name == "OODPGD":
        return "linf" if getattr(atk, "target", "ood") == "ood" else "in"
    return name


def run(args) -> dict:
    device = C.setup(args)
    bench = load_default_benchmark(seed=args.seed, n_aux=1, n_ood_per_set=args.images)
    model = C.make_model(bench.num_classes, args.width, device, reject=True, seed=args.seed)
    det = RejectClass(model).eval()
    sets = {name: bench.ood[name] for name in args.sets}
    n_ood = args.images * len(sets)

    # baseline: one no-grad forward per image, same batches
    xs = [torch.stack([bench.ood[s][i][0] for i in range(args.images)]).to(device) for s in args.sets]
    batches = [x[i:i + args.batch_size] for x in xs for i in range(0, x.shape[0], args.batch_size)]

    def forward_all():
        with torch.no_grad():
            for b in batches:
                det._score(b)

    fwd_times = C.interleaved({"f": forward_all}, device, args.repeats, warmup=1)["f"]

    # warm-up (numba JIT of glass blur, cached corruption matrices, allocator): 4 images, untimed
    E.evaluate(det, bench.test, sets, tasks=args.tasks, steps=1, batch_size=args.batch_size, seed=args.seed,
               progress=False, max_examples_per_set=min(4, args.images), keep_examples=0, device=device)

    # time every task inside evaluate
    sw = C.Stopwatch(device)
    state = {"task": "id"}
    orig_run, orig_score = ER.run_attack, ES.Scorer.score

    def run_attack(atk, x, seed, **kw):
        state["task"] = _task_of(atk)
        with sw(state["task"] + "/attack"):
            return orig_run(atk, x, seed, **kw)

    def score(self, x):
        with sw(state["task"] + "/score"):
            return orig_score(self, x)

    from atom_plugin.attacks.corruption import CorruptionAttack

    orig_key = CorruptionAttack._key

    def key(self, x):  # the corruption attack's scoring of its candidates (inside attack time)
        with sw(state["task"] + "/candidate_scoring"):
            return orig_key(self, x)

    ER.run_attack, ES.Scorer.score, CorruptionAttack._key = run_attack, score, key
    counted = {"images": 0}
    hook = det.model.register_forward_pre_hook(lambda m, inp: counted.__setitem__("images", counted["images"]
                                                                                   + inp[0].shape[0]))
    try:
        t0 = time.perf_counter()
        report = E.evaluate(det, bench.test, sets, tasks=args.tasks, steps=args.steps, eps=8 / 255, alpha=1 / 255,
                            batch_size=args.batch_size, seed=args.seed, progress=False,
                            max_examples_per_set=args.images, keep_examples=0, device=device)
        C.sync(device)
        total = time.perf_counter() - t0
    finally:
        ER.run_attack, ES.Scorer.score, CorruptionAttack._key = orig_run, orig_score, orig_key
    forwards_shared = counted["images"]
    # the same evaluation without the reuse (the compositional task runs its own search)
    counted["images"] = 0
    orig_share = ER._Run._share_corruption_search
    ER._Run._share_corruption_search = lambda self, atks: False
    try:
        report_noshare = E.evaluate(det, bench.test, sets, tasks=args.tasks, steps=args.steps, eps=8 / 255,
                                    alpha=1 / 255, batch_size=args.batch_size, seed=args.seed, progress=False,
                                    max_examples_per_set=args.images, keep_examples=0, device=device)
    finally:
        ER._Run._share_corruption_search = orig_share
        hook.remove()
    forwards_noshare = counted["images"]
    # the baseline again after the evaluation (load drifts): median over both rounds
    fwd_times += C.interleaved({"f": forward_all}, device, args.repeats, warmup=0)["f"]
    fwd = C.summary(fwd_times)["median"] / n_ood
    n_id = report.id_metrics["n_id"]
    rows = []
    for task in args.tasks:
        a = sw.totals.get(task + "/attack", 0.0)
        s = sw.totals.get(task + "/score", 0.0)
        cs = sw.totals.get(task + "/candidate_scoring", 0.0)
        rows.append({"task": task, "attack_s": a, "score_s": s, "ms_per_image": 1e3 * (a + s) / n_ood,
                     "corruption_scoring_s": cs,
                     "forwards_per_image": (a + s) / n_ood / fwd,
                     "fpr": report.metrics["mean"][task]["fpr"] if "mean" in report.metrics
                     else next(iter(report.metrics.values()))[task]["fpr"]})
    accounted = sum(v for k, v in sw.totals.items() if not k.endswith("/candidate_scoring"))
    return {
        "benchmark": "eval",
        "settings": {"tasks": list(args.tasks), "steps": args.steps, "eps": "8/255", "alpha": "1/255", "restarts": 1,
                     "corruptions": "15 x 5 severities (default)", "images_per_set": args.images,
                     "sets": list(args.sets), "n_id": n_id, "batch_size": args.batch_size, "width": args.width,
                     "model": f"RejectClass(Normalize(SmallCNN(width={args.width})) + reject head), untrained"},
        "forward_ms_per_image": 1e3 * fwd,
        "forward_times_s": fwd_times,
        "results": rows,
        "evaluate_total_s": total,
        "id_scoring_s": sw.totals.get("id/score", 0.0),
        "other_s": total - accounted,
        "all_tasks_forwards_per_image": sum(r["forwards_per_image"] for r in rows),
        "model_forwards": {"with_reuse": forwards_shared, "without_reuse": forwards_noshare,
                           "saved_fraction": 1 - forwards_shared / max(forwards_noshare, 1),
                           "per_ood_image_with_reuse": forwards_shared / n_ood,
                           "per_ood_image_without_reuse": forwards_noshare / n_ood},
        "fpr_without_reuse": {t: report_noshare.get("mean", t, "fpr") for t in args.tasks},
    }


def main(argv=None) -> int:
    p = C.parser(__doc__, "eval.json")
    p.add_argument("--images", type=int, default=128, help="OOD images per set (and ID images used)")
    p.add_argument("--sets", nargs="+", default=["textures"],
                   choices=["photos", "textures", "faces", "blobs", "gaussian", "uniform"])
    p.add_argument("--tasks", nargs="+", default=list(E.TASKS), choices=list(E.TASKS))
    p.add_argument("--steps", type=int, default=40, help="PGD steps (paper: 40)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="repeats of the forward baseline")
    args = p.parse_args(argv)
    C.setup(args)
    info = C.machine_info(args.device)
    res = run(args)
    path = C.write_json(args.out, res, info)
    if not args.quiet:
        print(C.machine_line(info))
        print(f"one forward: {res['forward_ms_per_image']:.3f} ms/image")
        print(C.table(res["results"], ["task", "attack_s", "score_s", "corruption_scoring_s", "ms_per_image",
                                       "forwards_per_image"]))
        print(f"\nevaluate() total {res['evaluate_total_s']:.2f} s (ID scoring {res['id_scoring_s']:.2f} s, "
              f"other {res['other_s']:.2f} s); all four tasks: {res['all_tasks_forwards_per_image']:.0f} "
              f"forwards per OOD image")
        mf = res["model_forwards"]
        print(f"model forwards (images through the network): {mf['with_reuse']} with the corruption-search "
              f"reuse, {mf['without_reuse']} without ({100 * mf['saved_fraction']:.1f}% saved)\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
