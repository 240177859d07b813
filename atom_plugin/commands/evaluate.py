"""``atom-ood eval``: evaluate an OOD detector on natural and attacked OOD sets.

Examples::

    # a checkpoint written by `atom-ood train`, on the embedded default benchmark
    atom-ood eval --checkpoint runs/atom/last.pt --out reports/atom
    # a timm model with local weights on CIFAR-10 vs SVHN and textures, energy score
    atom-ood eval --timm resnet18 --weights r18_cifar10.pth --num-classes 10 --detector energy \
        --data cifar10:/data --ood svhn:/data textures:/data --tasks natural linf --steps 40
    # a RobustBench model from a local model folder
    atom-ood eval --robustbench Carmon2019Unlabeled --model-dir ./models --data cifar10:/data --ood svhn:/data

Model, detector and attack options are shared with ``atom-ood attack`` and ``atom-ood bench``
(:mod:`atom_plugin.commands.common`).
"""
from __future__ import annotations

import argparse
import os
import sys

from .common import (add_attack_args, add_detector_args, add_model_args, build_detector, detector_kwargs,
                     load_model, resolve_device, split_list)

__all__ = ["add_parser", "run", "add_data_args", "add_output_args", "check_out_dir", "eval_config", "load_data"]


def add_data_args(p: argparse.ArgumentParser) -> None:
    from ..data import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--data", default="default", metavar="SPEC",
                   help="in-distribution data: 'default' (the embedded benchmark) or cifar10:ROOT, cifar100:ROOT, "
                        "svhn:ROOT (test split evaluated, train split fits detectors that need fitting)")
    g.add_argument("--ood", nargs="+", metavar="SPEC", default=None,
                   help=f"OOD sets [LABEL=]KIND:PATH, KIND in {', '.join(sorted(DATASETS + ('npy',)))}; 'default' = "
                        "the six embedded sets (the default with --data default)")
    g.add_argument("--max-examples", type=int, default=None, metavar="N", help="first N images of every set")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers")


def add_output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--out", default=default_out, metavar="DIR", help="report folder")
    o.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--tpr", type=float, default=0.95, help="TPR level of the threshold")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    o.add_argument("--quiet", action="store_true", help="no progress bars, print only the output folder")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..evaluation import TASK_REGISTRY, list_tasks

    p = subparsers.add_parser(
        "eval", help="evaluate an OOD detector (natural, corruption, L-inf, compositional OOD)",
        description="Evaluate an OOD detector on natural and attacked OOD sets (ATOM paper Sec. 5.1) and write "
                    "a report folder: table.md (Table 1 layout), report.json, metrics.csv, plots. "
                    "FPR is FPR at 95% TPR with in-distribution positive. Runs under torchrun too "
                    "(each rank evaluates a shard; rank 0 writes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(p)
    add_detector_args(p)
    add_data_args(p)
    a = add_attack_args(p)
    tasks = list_tasks()
    a.add_argument("--tasks", nargs="+", default=["natural", "corruption", "linf", "compositional"], metavar="TASK",
                   help="space or comma separated; " + "; ".join(f"{t}: {TASK_REGISTRY.get(t).help}"
                                                                 for t in tasks).replace("%", "%%"))
    a.add_argument("--attack-id", action="store_true",
                   help="also attack ID inputs (tasks 'in' and 'in_out', ALOE-style)")
    a.add_argument("--early-stop", action="store_true",
                   help="stop attacking an image once it is accepted as ID (same FPR, cheaper; AUROC not worst-case)")
    a.add_argument("--diagnostics", action="store_true",
                   help="run the gradient-masking checks on 64 images of each OOD set and report them")
    add_output_args(p, "ood_report")
    o = [g for g in p._action_groups if g.title == "output"][0]
    o.add_argument("--name", default=None, help="label of the report (e.g. the method)")
    p.set_defaults(run=run)
    return p


def check_out_dir(path: str, overwrite: bool, option: str = "--out") -> None:
    """Refuse an ``--out`` that is a file, lies under a file, or is a non-empty folder
    (unless ``overwrite``), before any work is done."""
    p = os.path.abspath(path)
    if os.path.isfile(p):
        raise ValueError(f"{option} {path!r} is a file; pass a folder path.")
    parent = p
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{option} {path!r}: {parent!r} is a file, so the folder cannot be created.")
    if parent and not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path!r}: {parent!r} is not writable.")
    if os.path.isdir(p) and os.listdir(p) and not overwrite:
        raise ValueError(f"{option} {path!r} is not empty; pick a new folder or pass --overwrite.")


def eval_config(args, tasks=None):
    """The :class:`~atom_plugin.evaluation.EvalConfig` of the command-line options."""
    from ..evaluation import EvalConfig

    for opt, val, low in (("--steps", args.steps, 1), ("--restarts", args.restarts, 1),
                          ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if val < low:
            raise ValueError(f"{opt} must be >= {low}, got {val}.")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be >= 1, got {args.max_examples}.")
    try:
        return EvalConfig(
            tasks=tuple(tasks if tasks is not None else split_list(args.tasks)), eps=args.eps, alpha=args.alpha,
            steps=args.steps, restarts=args.restarts, linf_attack=args.attack, attack_version=args.attack_version,
            corruptions=args.corruptions,
            severities=args.severities, corruption_backend=args.corruption_backend,
            corruption_table=args.corruption_table, attack_id=getattr(args, "attack_id", False),
            early_stop=getattr(args, "early_stop", False), diagnostics=getattr(args, "diagnostics", False),
            batch_size=args.batch_size, seed=args.seed,
            progress=not args.quiet, max_examples_per_set=args.max_examples, tpr=args.tpr,
            num_workers=args.workers)
    except ValueError as err:
        msg = str(err)
        for field, opt in (("`tasks`", "--tasks"), ("`linf_attack`", "--attack"), ("`tpr`", "--tpr"),
                           ("`eps`", "--eps"), ("`severities`", "--severities")):
            msg = msg.replace(field, opt)
        raise ValueError(msg) from None


def load_data(args):
    """``(id test set, id train set, {name: ood set})`` of ``--data`` / ``--ood``."""
    from ..data.specs import load_id_data, load_ood_sets, parse_dataset_spec

    parse_dataset_spec(args.data, "--data")
    for spec in args.ood or []:  # check every spec before loading anything
        parse_dataset_spec(spec, "--ood")
    test, train, bench = load_id_data(args.data, 0)
    if args.ood:
        return test, train, load_ood_sets(args.ood, bench)
    if bench is None:
        raise ValueError("--ood is required unless --data default (e.g. --ood svhn:/data textures:/data).")
    return test, train, dict(bench.ood)


def run(args) -> int:
    from .. import distributed as D
    from ..evaluation import evaluate

    D.init_from_env()
    cfg = eval_config(args)
    check_out_dir(args.out, args.overwrite)
    device = resolve_device(args.device)
    kwargs = detector_kwargs(args.detector_arg)
    model, k = load_model(args)
    test, train, ood = load_data(args)
    det = build_detector(args.detector, model.to(device), k, fit_data=train, kwargs=kwargs, quiet=args.quiet,
                         fit_samples=args.fit_samples)
    rep = evaluate(det, test, ood, cfg.replace(device=str(device), name=args.name or type(det).__name__))
    rep.config["model_source"] = args.checkpoint or args.timm or args.robustbench
    if D.is_main_process():
        rep.save(args.out, plots=not args.no_plots)
        for w in rep.warnings:
            print(f"atom-ood eval: {w}", file=sys.stderr)
        if args.quiet:
            print(os.path.abspath(args.out))
        else:
            print(rep.table())
            print(f"\nwrote {os.path.abspath(args.out)} (table.md, report.json, metrics.csv"
                  f"{'' if args.no_plots else ', plots'})", file=sys.stderr)
    D.barrier()
    return 0
