"""``atom-ood eval``: evaluate an OOD detector on natural and attacked OOD sets.

Examples::

    # a checkpoint written by `atom-ood train`, on the embedded default benchmark
    atom-ood eval --checkpoint runs/atom/last.pt --out reports/atom
    # a timm model with local weights on CIFAR-10 vs SVHN and textures, energy score
    atom-ood eval --timm resnet18 --weights r18_cifar10.pth --num-classes 10 --detector energy \
        --data cifar10:/data --ood svhn:/data textures:/data --tasks natural linf --steps 40
    # a RobustBench model from a local model folder
    atom-ood eval --robustbench Carmon2019Unlabeled --model-dir ./models --data cifar10:/data --ood svhn:/data

Model options, data options and detector options are shared with ``atom-ood attack``.
"""
from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from typing import Any

__all__ = ["add_parser", "run", "add_model_args", "add_detector_args", "load_model", "build_detector",
           "parse_fraction", "parse_dataset_spec", "load_ood_sets"]

DETECTORS = ("auto", "msp", "odin", "energy", "mahalanobis", "reject", "sofl")
TASK_CHOICES = ("natural", "corruption", "linf", "compositional")


# ------------------------------------------------------------------ argument types
def parse_fraction(text: str) -> float:
    """``"8/255"`` or ``"0.0314"`` -> float (argparse type)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None


def parse_dataset_spec(spec: str, option: str) -> tuple[str, str, str]:
    """``[LABEL=]KIND:PATH`` -> ``(label, kind, path)``; ``default`` -> ``("default", "default", "")``."""
    label = None
    if "=" in spec.split(":", 1)[0]:
        label, spec = spec.split("=", 1)
    if spec in ("default",) or spec.startswith("default:"):
        kind, _, path = spec.partition(":")
        return label or (path or "default"), "default", path
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(
            f"{option} {spec!r}: expected KIND:PATH (e.g. svhn:/data, textures:/data/dtd, npy:/data/x.npy, "
            "folder:/images) or 'default'."
        )
    from ..data import DATASETS

    if kind not in DATASETS + ("npy",):
        raise ValueError(f"{option} {spec!r}: unknown dataset kind {kind!r}; use one of {sorted(DATASETS + ('npy',))}.")
    return label or kind, kind, path


def _load_spec(kind: str, path: str, split: str, as_ood: bool, option: str):
    from ..data import load_dataset, load_npy_images

    if kind == "npy":
        return load_npy_images(path, label=-1 if as_ood else 0)
    try:
        return load_dataset(kind, path, split=split, as_ood=as_ood)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{option} {kind}:{path}: {err}") from None


def load_ood_sets(specs: list[str], bench=None, option: str = "--ood") -> dict[str, Any]:
    """``--ood`` specs -> ``{name: dataset}``; ``default`` expands to the embedded sets."""
    out: dict[str, Any] = {}
    for spec in specs:
        label, kind, path = parse_dataset_spec(spec, option)
        if kind == "default":
            if bench is None:
                from ..data import load_default_benchmark

                bench = load_default_benchmark(n_aux=1)  # the auxiliary set is not used here
            if path:
                if path not in bench.ood:
                    raise ValueError(f"{option} {spec!r}: the default benchmark has sets {list(bench.ood)}, not {path!r}.")
                out[path] = bench.ood[path]
            else:
                out.update(bench.ood)
            continue
        if label in out:
            raise ValueError(f"{option}: the set name {label!r} is used twice; name them LABEL=KIND:PATH.")
        out[label] = _load_spec(kind, path, "test", True, option)
    return out


# ------------------------------------------------------------------ model loading
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (exactly one of --checkpoint, --timm, --robustbench)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH",
                     help="checkpoint of `atom-ood train` (dict with 'model' state_dict, 'num_classes', "
                          "'num_reject'), or a bare state_dict of a SmallCNN (inferred) / --arch model")
    src.add_argument("--timm", metavar="NAME", help="a timm architecture; weights from --weights FILE")
    src.add_argument("--robustbench", metavar="NAME", help="a RobustBench model; weights under --model-dir")
    g.add_argument("--arch", metavar="ARCH", default=None,
                   help="architecture of --checkpoint: 'smallcnn' (default, inferred from the weights) or a timm name")
    g.add_argument("--weights", metavar="FILE", help="local weights for --timm (.pth/.pt/.safetensors)")
    g.add_argument("--model-dir", metavar="DIR", help="RobustBench model folder (<DIR>/<dataset>/<threat>/<NAME>.pt)")
    g.add_argument("--rb-dataset", default="cifar10", help="RobustBench dataset (default cifar10)")
    g.add_argument("--threat-model", default="Linf", help="RobustBench threat model (default Linf)")
    g.add_argument("--num-classes", type=int, metavar="K", help="in-distribution classes K (if not in the checkpoint)")
    g.add_argument("--num-reject", type=int, metavar="R", default=None,
                   help="reject classes R of the model (default: from the checkpoint, else 0)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def load_model(args) -> tuple[Any, int]:
    """The model of the ``--checkpoint`` / ``--timm`` / ``--robustbench`` options and ``K``."""
    from ..models import head_spec

    if args.checkpoint:
        from ..pretrained import load_checkpoint_model

        try:
            return load_checkpoint_model(args.checkpoint, num_classes=args.num_classes, num_reject=args.num_reject,
                                         arch=args.arch)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--checkpoint: {err}") from None
        except ValueError as err:
            raise ValueError(f"--checkpoint: {err}") from None
    if args.timm:
        from ..pretrained import create_timm_model

        if args.num_classes is None:
            raise ValueError("--timm needs --num-classes K.")
        if not args.weights:
            raise ValueError("--timm needs --weights FILE (nothing is downloaded).")
        if not os.path.isfile(args.weights):
            raise FileNotFoundError(f"--weights {args.weights!r}: no such file.")
        model = create_timm_model(args.timm, args.num_classes, checkpoint=args.weights,
                                  num_reject=args.num_reject or 0)
        return model, args.num_classes
    from ..pretrained import load_robustbench_model

    if not args.model_dir:
        raise ValueError("--robustbench needs --model-dir DIR.")
    model = load_robustbench_model(args.robustbench, args.model_dir, dataset=args.rb_dataset,
                                   threat_model=args.threat_model, num_reject=args.num_reject or 0)
    k = args.num_classes or {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(args.rb_dataset)
    head_spec(model, k)  # checks K against the model's outputs
    return model, k


# ------------------------------------------------------------------ detectors
def add_detector_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--detector", default="auto", choices=DETECTORS,
                   help="OOD score: auto (K-way -> msp, K+1 -> reject, K+R -> sofl), msp, odin, energy, "
                        "mahalanobis (fitted on the ID training split), reject (K+1), sofl (K+R)")
    g.add_argument("--odin-temperature", type=float, default=1000.0)
    g.add_argument("--odin-epsilon", type=float, default=0.0014)
    g.add_argument("--energy-temperature", type=float, default=1.0)
    g.add_argument("--fit-samples", type=int, default=5000,
                   help="ID training images used to fit Mahalanobis (default 5000)")


def build_detector(args, model, k: int, fit_data=None):
    from .. import detectors as dets

    name = args.detector
    if name == "auto":
        return dets.as_detector(model, num_classes=k)
    if name == "msp":
        return dets.MSP(model, num_classes=k)
    if name == "energy":
        return dets.Energy(model, temperature=args.energy_temperature, num_classes=k)
    if name == "reject":
        return dets.RejectClass(model, num_classes=k)
    if name == "sofl":
        return dets.RejectSum(model, num_classes=k)
    if name == "odin":
        from ..detectors.odin import ODIN

        return ODIN(model, temperature=args.odin_temperature, epsilon=args.odin_epsilon, num_classes=k)
    from torch.utils.data import DataLoader

    from ..detectors.mahalanobis import Mahalanobis

    if fit_data is None:
        raise ValueError("--detector mahalanobis needs ID training data: use --data default or --data cifar10:ROOT.")
    det = Mahalanobis(model, num_classes=k)
    det.fit(DataLoader(fit_data, batch_size=128, shuffle=False), max_samples=args.fit_samples,
            progress=not args.quiet)
    return det


# ------------------------------------------------------------------ the command
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="evaluate an OOD detector (natural, corruption, L-inf, compositional OOD)",
        description="Evaluate an OOD detector on natural and attacked OOD sets (ATOM paper Sec. 5.1) and write "
                    "a report folder: table.md (Table 1 layout), report.json, metrics.csv, plots. "
                    "FPR is FPR at 95%% TPR with in-distribution positive. Runs under torchrun too "
                    "(each rank evaluates a shard; rank 0 writes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(p)
    add_detector_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="default", metavar="SPEC",
                   help="in-distribution data: 'default' (the embedded benchmark) or cifar10:ROOT, cifar100:ROOT, "
                        "svhn:ROOT (test split evaluated, train split fits Mahalanobis)")
    g.add_argument("--ood", nargs="+", metavar="SPEC", default=None,
                   help="OOD sets [LABEL=]KIND:PATH, KIND in svhn, cifar10, cifar100, textures, places365, lsun_crop, "
                        "lsun_resize, isun, folder, random300k, npy; 'default' = the six embedded sets "
                        "(the default with --data default)")
    g.add_argument("--max-examples", type=int, default=None, metavar="N", help="first N images of every set")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    a = p.add_argument_group("attacks")
    a.add_argument("--tasks", nargs="+", default=list(TASK_CHOICES), metavar="TASK",
                   help=f"any of {', '.join(TASK_CHOICES)} (space or comma separated)")
    a.add_argument("--attack-id", action="store_true",
                   help="also attack ID inputs (tasks 'in' and 'in_out', ALOE-style)")
    a.add_argument("--eps", type=parse_fraction, default=8 / 255, help="L-inf radius, e.g. 8/255")
    a.add_argument("--alpha", type=parse_fraction, default=1 / 255, help="PGD step size, e.g. 1/255")
    a.add_argument("--steps", type=int, default=40, help="PGD steps")
    a.add_argument("--restarts", type=int, default=1, help="PGD random restarts")
    a.add_argument("--corruptions", nargs="+", default=None, metavar="NAME",
                   help="corruption types (default: the 15 common ones)")
    a.add_argument("--severities", nargs="+", type=int, default=None, metavar="S", help="severities (default 1..5)")
    a.add_argument("--corruption-backend", default=None, choices=("torch", "imagecorruptions"))
    o = p.add_argument_group("output")
    o.add_argument("--out", default="ood_report", metavar="DIR", help="report folder")
    o.add_argument("--name", default=None, help="label of the report (e.g. the method)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--tpr", type=float, default=0.95, help="TPR level of the threshold")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument("--quiet", action="store_true", help="no progress bars, print only the output folder")
    p.set_defaults(run=run)
    return p


def _tasks(values: list[str]) -> list[str]:
    out = [t for v in values for t in v.split(",") if t]
    for t in out:
        if t not in TASK_CHOICES:
            raise ValueError(f"--tasks: unknown task {t!r}; use any of {', '.join(TASK_CHOICES)}.")
    return out


def load_id_data(spec: str, seed: int = 0):
    """``--data`` -> ``(test_set, train_set, benchmark or None)``."""
    label, kind, path = parse_dataset_spec(spec, "--data")
    if kind == "default":
        from ..data import load_default_benchmark

        b = load_default_benchmark(seed=seed, n_aux=1)  # the auxiliary set is not used here
        return b.test, b.train, b
    if kind not in ("cifar10", "cifar100", "svhn"):
        raise ValueError(f"--data {spec!r}: in-distribution data must be default, cifar10, cifar100 or svhn.")
    return _load_spec(kind, path, "test", False, "--data"), _load_spec(kind, path, "train", False, "--data"), None


def run(args) -> int:
    import torch

    from .. import distributed as D
    from ..evaluation import evaluate

    D.init_from_env()
    for opt, val, low in (("--steps", args.steps, 1), ("--restarts", args.restarts, 1),
                          ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if val < low:
            raise ValueError(f"{opt} must be >= {low}, got {val}.")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be >= 1, got {args.max_examples}.")
    tasks = _tasks(args.tasks)
    parse_dataset_spec(args.data, "--data")
    for spec in args.ood or []:  # check every spec before loading anything
        parse_dataset_spec(spec, "--ood")
    device = torch.device(args.device) if args.device else D.default_device()
    model, k = load_model(args)
    test, train, bench = load_id_data(args.data, 0)
    if args.ood:
        ood = load_ood_sets(args.ood, bench)
    elif bench is not None:
        ood = dict(bench.ood)
    else:
        raise ValueError("--ood is required unless --data default (e.g. --ood svhn:/data textures:/data).")
    model = model.to(device)
    det = build_detector(args, model, k, fit_data=train)
    rep = evaluate(det, test, ood, tasks=tasks, eps=args.eps, alpha=args.alpha, steps=args.steps,
                   restarts=args.restarts, corruptions=args.corruptions, severities=args.severities,
                   corruption_backend=args.corruption_backend, attack_id=args.attack_id,
                   batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                   max_examples_per_set=args.max_examples, device=device, tpr=args.tpr,
                   num_workers=args.workers, name=args.name or type(det).__name__)
    rep.config["model_source"] = args.checkpoint or args.timm or args.robustbench
    if D.is_main_process():
        rep.save(args.out, plots=not args.no_plots)
        if args.quiet:
            print(os.path.abspath(args.out))
        else:
            print(rep.table())
            print(f"\nwrote {os.path.abspath(args.out)} (table.md, report.json, metrics.csv"
                  f"{'' if args.no_plots else ', plots'})", file=sys.stderr)
    D.barrier()
    return 0
