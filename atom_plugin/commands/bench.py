"""``atom-ood bench``: a robust-OOD leaderboard of many detectors on one model.

Evaluates every detector of ``--detectors`` on the same model, data and attacks and
writes one table (rows = detectors; columns = natural / corruption / L∞ / compositional
FPR and AUROC, ID and end-to-end accuracy), like RobustBench's table for classifiers::

    atom-ood bench --checkpoint runs/atom/last.pt --detectors msp,energy,mahalanobis,reject --attack auto

Writes ``<out>/leaderboard.md/.json/.csv`` and ``<out>/<detector>/`` report folders.
"""
from __future__ import annotations

import argparse
import os
import sys

from .common import (add_attack_args, add_detector_args, add_model_args, build_detector, detector_kwargs,
                     load_model, resolve_device, split_list)
from .evaluate import add_data_args, add_output_args, check_out_dir, eval_config, load_data

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="evaluate many detectors of one model and write one robust-OOD leaderboard table",
        description="Evaluate several OOD detectors of one model under the same natural, corruption, L-inf and "
                    "compositional attacks and write one leaderboard (FPR at 95% TPR, ID positive; AUROC).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(p)
    add_detector_args(p, many=True)
    add_data_args(p)
    a = add_attack_args(p)
    a.add_argument("--tasks", nargs="+", default=["natural", "corruption", "linf", "compositional"], metavar="TASK",
                   help="space or comma separated tasks")
    add_output_args(p, "ood_leaderboard")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from .. import distributed as D
    from ..detectors import DETECTORS
    from ..evaluation import evaluate
    from ..report import Comparison

    D.init_from_env()
    cfg = eval_config(args)
    names = split_list(args.detectors)
    for n in names:
        if n not in DETECTORS:
            raise ValueError(f"--detectors: unknown detector {n!r}; use any of {', '.join(DETECTORS.names())}.")
    if len(set(names)) != len(names):
        raise ValueError(f"--detectors has duplicates: {names}.")
    check_out_dir(args.out, args.overwrite)
    device = resolve_device(args.device)
    kwargs = detector_kwargs(args.detector_arg)
    model, k = load_model(args)
    model = model.to(device)
    test, train, ood = load_data(args)
    reports, skipped = {}, {}
    for name in names:
        try:
            det = build_detector(name, model, k, fit_data=train, kwargs=kwargs, quiet=args.quiet,
                                 fit_samples=args.fit_samples)
        except ValueError as err:  # e.g. a K+1 detector on a K-way model: skip it, say why
            skipped[name] = str(err)
            print(f"atom-ood bench: skipping {name}: {err}", file=sys.stderr)
            continue
        reports[name] = evaluate(det, test, ood, cfg.replace(device=str(device), name=name))
    if not reports:
        raise ValueError("no detector of --detectors could be built for this model: " + "; ".join(
            f"{n}: {e}" for n, e in skipped.items()))
    comp = Comparison(reports)
    if D.is_main_process():
        paths = comp.save(args.out)
        os.replace(paths["table"], os.path.join(args.out, "leaderboard.md"))
        for name, rep in reports.items():
            rep.save(os.path.join(args.out, name), plots=not args.no_plots)
        if skipped:
            with open(os.path.join(args.out, "skipped.txt"), "w", encoding="utf-8") as fh:
                fh.writelines(f"{n}: {e}\n" for n, e in skipped.items())
        print(os.path.abspath(args.out) if args.quiet else comp.table())
    D.barrier()
    return 0
