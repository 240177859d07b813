"""Load a RobustBench model from a local ``model_dir``, attach OOD detectors, evaluate the four OOD tasks.

RobustBench's ``load_model`` downloads missing checkpoints from Google Drive;
``atom_plugin.pretrained.load_robustbench_model`` reads the same layout
(``<model_dir>/<dataset>/<threat_model>/<name>.pt``), checks the file loads with
``torch.load(weights_only=True)`` before RobustBench unpickles it, and raises
``FileNotFoundError`` (saying where to put the file) instead of downloading.

The script then attaches post-hoc detectors to the robust classifier

* ``msp``: maximum softmax probability (attacked through eq. 115, cross-entropy to uniform);
* ``energy``: the energy score ``-logsumexp(z)``;
* ``mahalanobis``: class-conditional Gaussians on the network's stages, fitted on
  in-distribution training images (logistic-regression ensemble; attacked through eq. 116)

and evaluates each with ``atom_plugin.evaluate`` under the paper's four OOD tasks (natural,
corruption, L-inf, compositional), writing one report per detector plus a comparison
table (``comparison.md``) to ``--out``.

Data: the embedded benchmark (digits as in-distribution) so the script runs anywhere.  A
CIFAR-10 model is of course not a digits classifier, so its accuracy there is chance
level; with CIFAR-10 on disk pass ``--cifar10 <root>`` to use the CIFAR-10 test set as
in-distribution (and its training set to fit Mahalanobis) instead.

The checkpoint: put the real file (downloaded once on a machine with internet, e.g.
``robustbench.utils.load_model("Wong2020Fast", model_dir="models")``) under
``--model-dir``.  ``--standin`` writes a *randomly initialised* checkpoint of the same
architecture there if none exists, so the pipeline runs offline; its numbers mean nothing.

    python examples/robustbench_detector.py --standin --out runs/robustbench     # ~1 min on 2 cores
    python examples/robustbench_detector.py --model-dir ~/models --name Wong2020Fast --cifar10 ~/data
    python examples/robustbench_detector.py --standin --quick --out /tmp/rb      # seconds
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

import atom_plugin  # noqa: F401  (first: installs the torchvision/timm compatibility fixes)
from atom_plugin import Comparison, Energy, Mahalanobis, MSP, evaluate, head_spec
from atom_plugin.data import load_default_benchmark
from atom_plugin.pretrained import load_robustbench_model, robustbench_checkpoint_path

TASKS = ("natural", "corruption", "linf", "compositional")
DETECTORS = ("msp", "energy", "mahalanobis")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default="Wong2020Fast",
                   help="RobustBench model name (cifar10 / Linf; Wong2020Fast is a PreAct ResNet-18)")
    p.add_argument("--model-dir", type=Path, default=None, help="RobustBench model_dir (default: <out>/models)")
    p.add_argument("--standin", action="store_true",
                   help="if the checkpoint is missing, write a randomly initialised one (offline demo)")
    p.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    p.add_argument("--ood-sets", nargs="+", default=["photos", "blobs", "gaussian"],
                   help="embedded OOD sets to evaluate (photos textures faces blobs gaussian uniform)")
    p.add_argument("--n-id", type=int, default=128, help="in-distribution test images")
    p.add_argument("--n-ood", type=int, default=16, help="images per OOD set")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=5, help="PGD steps (alpha = 2.5 eps / steps)")
    p.add_argument("--cifar10", type=Path, default=None,
                   help="root of a local CIFAR-10 copy (cifar-10-batches-py): use it as in-distribution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("robustbench_detector_out"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run (few images, 1 PGD step)")
    p.add_argument("--quiet", action="store_true")
    return p


def write_standin(name: str, model_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised (seeded) checkpoint of RobustBench model ``name`` at the path it expects."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    path = Path(robustbench_checkpoint_path(name, model_dir, "cifar10", "Linf"))
    entry = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][name]
    torch.manual_seed(seed)
    net = entry["model"]()
    state = net.state_dict()
    if name == "Andriushchenko2020Understanding":  # this entry's file holds {"last": ..., "best": ...}
        state = {"last": state}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def id_data(args, bench):
    """(ID test set, ID train set) as datasets of (image in [0, 1], label)."""
    if args.cifar10 is None:
        return bench.test, bench.train
    from atom_plugin.data import load_dataset

    root = str(args.cifar10)
    return load_dataset("cifar10", root, split="test"), load_dataset("cifar10", root, split="train")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n_id, args.n_ood, args.steps = min(args.n_id, 32), min(args.n_ood, 4), 1
        args.ood_sets = args.ood_sets[:2]
    progress = not args.quiet
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir if args.model_dir is not None else out / "models"
    t0 = time.time()

    # 1. the model, from model_dir only
    path = robustbench_checkpoint_path(args.name, model_dir, "cifar10", "Linf")
    if not os.path.isfile(path) and args.standin:
        write_standin(args.name, model_dir, args.seed)
        print(f"NOTE: no checkpoint at {path}; wrote a RANDOMLY INITIALISED stand-in there (--standin). "
              "Put the real RobustBench file there for meaningful numbers.")
    model = load_robustbench_model(args.name, model_dir, "cifar10", "Linf")  # FileNotFoundError if missing
    k, _ = head_spec(model)
    print(f"loaded RobustBench {args.name} from {path}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
          f"parameters, {k} classes")

    # 2. data
    bench = load_default_benchmark(seed=args.seed, n_aux=1, n_ood_per_set=args.n_ood)
    unknown = sorted(set(args.ood_sets) - set(bench.ood))
    if unknown:
        raise SystemExit(f"--ood-sets: unknown {unknown}; choose from {sorted(bench.ood)}")
    id_test, id_train = id_data(args, bench)
    id_test = Subset(id_test, range(min(args.n_id, len(id_test))))
    ood = {n: bench.ood[n] for n in args.ood_sets}

    # 3. detectors on the same classifier, each evaluated under the four tasks
    alpha = 2.5 * args.eps / args.steps
    reports, timing = {}, {}
    for det_name in args.detectors:
        t = time.time()
        # .eval(): detectors are new nn.Modules (training mode by default) and evaluate() restores
        # the detector's mode, and with it the shared classifier's, when it returns.
        if det_name == "msp":
            det = MSP(model).eval()
        elif det_name == "energy":
            det = Energy(model).eval()
        else:
            det = Mahalanobis(model).eval()
            n_fit = 64 if args.quick else 256
            det.fit(DataLoader(Subset(id_train, range(min(n_fit, len(id_train)))), batch_size=64),
                    lr_samples=32 if args.quick else 128, progress=progress)
            print(f"Mahalanobis fitted on {n_fit} ID training images, layers {det.layers}")
        rep = evaluate(det, id_test, ood, tasks=TASKS, eps=args.eps, alpha=alpha, steps=args.steps,
                       corruptions=["gaussian_noise", "contrast", "pixelate"], severities=[3] if args.quick else [2, 4],
                       seed=args.seed, progress=progress, batch_size=32, name=det_name)
        rep.save(out / det_name, plots=not args.quick)
        reports[det_name] = rep
        timing[det_name] = round(time.time() - t, 1)
        print(f"{det_name}: {timing[det_name]} s")

    comp = Comparison(reports)
    comp.save(out)
    print(f"\nRobustBench {args.name}, FPR at 95% TPR (ID positive) and AUROC, mean over {list(ood)}, percent; "
          f"eps={args.eps * 255:.0f}/255, {args.steps} PGD steps")
    print(comp.table())
    results = {
        "name": args.name, "checkpoint": path, "standin": bool(args.standin), "num_classes": k,
        "detectors": {d: {"accuracy": r.id_metrics.get("accuracy"),
                          "fpr": {t: r.get("mean", t, "fpr") for t in TASKS},
                          "auroc": {t: r.get("mean", t, "auroc") for t in TASKS},
                          "seconds": timing[d]} for d, r in reports.items()},
        "total_s": round(time.time() - t0, 1), "quick": args.quick,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"report folder {out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
