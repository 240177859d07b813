"""``atom-ood attack``: write adversarial (or corrupted) OOD images to disk.

For each OOD set: ``<out>/<set>/images.npy`` (``float32 (N, C, H, W)`` in [0, 1], exact;
or ``uint8 (N, H, W, C)`` with ``--format uint8``, the layout of
:func:`atom_plugin.data.load_npy_images`), ``scores.npy`` (``float64 (N, 2)``: OOD score
of the clean and of the attacked image), PNGs of the first ``--png`` images, and
``<out>/attack.json`` with the settings and per-set score summaries.  Nothing is pickled.

Example::

    atom-ood attack --checkpoint runs/atom/last.pt --data default --method linf --steps 40 --out adv/
    atom-ood attack --timm resnet18 --weights r18.pth --num-classes 10 --data svhn:/data \
        --method compositional --max-examples 1000 --format uint8 --out adv_svhn/
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..data.specs import load_ood_sets, parse_dataset_spec
from .common import (add_attack_args, add_detector_args, add_model_args, build_detector, detector_kwargs, load_model,
                     resolve_device)

__all__ = ["add_parser", "run"]

METHODS = ("linf", "corruption", "compositional", "in")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "attack", help="write adversarial / corrupted OOD images of a dataset to disk (.npy + PNG)",
        description="Attack the images of a dataset against an OOD detector and save them: "
                    "linf (white-box PGD making OOD look ID), corruption (best of the corruptions), "
                    "compositional (corruption then PGD), in (PGD making ID look OOD). "
                    "Writes <out>/<set>/images.npy, scores.npy, PNGs and <out>/attack.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(p)
    add_detector_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", default=["default"], metavar="SPEC",
                   help="sets to attack: [LABEL=]KIND:PATH (svhn, cifar10, cifar100, textures, places365, "
                        "lsun_crop, lsun_resize, isun, folder, random300k, npy) or 'default' (the six embedded "
                        "OOD sets) / 'default:NAME' (one of them)")
    g.add_argument("--max-examples", type=int, default=None, metavar="N", help="first N images of every set")
    g.add_argument("--batch-size", type=int, default=128)
    a = add_attack_args(p)
    a.add_argument("--method", default="linf", choices=METHODS,
                   help="linf (OOD made to look ID), corruption, compositional, in (ID made to look OOD)")
    a.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="output folder")
    o.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    o.add_argument("--format", default="float32", choices=("float32", "uint8"),
                   help="images.npy as float32 (N,C,H,W) in [0,1] (exact) or uint8 (N,H,W,C) (rounded)")
    o.add_argument("--png", type=int, default=16, metavar="N", help="also save the first N images as PNG (0: none)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def _build_attack(args, det):
    """The attack of ``--method`` built exactly as the evaluation builds it (task registry)."""
    from ..evaluation import EvalConfig, build_attack

    cfg = EvalConfig(tasks=("natural",), eps=args.eps, alpha=args.alpha, steps=args.steps, restarts=args.restarts,
                     linf_attack=args.attack, attack_version=args.attack_version, corruptions=args.corruptions,
                     severities=args.severities,
                     corruption_backend=args.corruption_backend, corruption_table=args.corruption_table,
                     progress=False)
    return build_attack(args.method, det, cfg)


def _save_png(img_hwc, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.imsave(path, img_hwc[..., 0] if img_hwc.shape[-1] == 1 else img_hwc, cmap="gray" if img_hwc.shape[-1] == 1 else None)


def _check_args(args) -> None:
    from .. import distributed as D
    from .evaluate import check_out_dir

    for opt, val, low in (("--steps", args.steps, 1), ("--restarts", args.restarts, 1),
                          ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0), ("--png", args.png, 0)):
        if val < low:
            raise ValueError(f"{opt} must be >= {low}, got {val}.")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be >= 1, got {args.max_examples}.")
    if D.get_world_size() > 1:  # pragma: no cover
        raise ValueError("atom-ood attack runs in one process; launch it without torchrun.")
    for spec in args.data:
        parse_dataset_spec(spec, "--data")
    check_out_dir(args.out, args.overwrite)


def _attack_set(args, name: str, ds, atk, scorer, device) -> dict:
    """Attack the first ``--max-examples`` images of one set; write images.npy, scores.npy, PNGs."""
    import numpy as np
    from torch.utils.data import DataLoader, Subset

    from .._utils import progress, split_batch
    from .._validation import check_images
    from ..evaluation import batch_seed, run_attack, to_uint8

    n = len(ds) if args.max_examples is None else min(len(ds), args.max_examples)
    loader = DataLoader(Subset(ds, range(n)), batch_size=args.batch_size, shuffle=False)
    folder = os.path.join(args.out, name.replace(os.sep, "_"))
    os.makedirs(folder, exist_ok=True)
    out, shape, pos = None, None, 0
    scores = np.zeros((n, 2), dtype=np.float64)
    for b, batch in enumerate(progress(loader, not args.quiet, name)):
        x = check_images(split_batch(batch, "--data")[0].to(device), f"--data {name} images")
        adv = run_attack(atk, x, batch_seed(args.seed, name, args.method, b))
        arr = adv.cpu().float().numpy() if args.format == "float32" else to_uint8(adv)
        if out is None:
            shape = (n,) + arr.shape[1:]
            out = np.lib.format.open_memmap(os.path.join(folder, "images.npy"), mode="w+", dtype=arr.dtype,
                                            shape=shape)
        out[pos:pos + len(arr)] = arr
        scores[pos:pos + len(arr), 0] = scorer.score(x).cpu().numpy()
        scores[pos:pos + len(arr), 1] = scorer.score(adv).cpu().numpy()
        u8 = to_uint8(adv)
        for i in range(min(len(arr), max(args.png - pos, 0))):
            _save_png(u8[i], os.path.join(folder, f"{pos + i:05d}.png"))
        pos += len(arr)
    out.flush()
    del out
    np.save(os.path.join(folder, "scores.npy"), scores, allow_pickle=False)
    moved = scores[:, 1] > scores[:, 0] if args.method == "in" else scores[:, 1] < scores[:, 0]  # "in" pushes up
    return {"n": int(n), "images": os.path.join(folder, "images.npy"), "shape": list(shape),
            "mean_score_clean": float(scores[:, 0].mean()), "mean_score_attacked": float(scores[:, 1].mean()),
            "fraction_moved": float(np.mean(moved))}


def run(args) -> int:
    from ..detectors import detector_info
    from ..evaluation import Scorer

    _check_args(args)
    device = resolve_device(args.device)
    sets = load_ood_sets(args.data, option="--data")
    model, k = load_model(args)
    model = model.to(device).eval()
    if detector_info(args.detector).needs_fit:
        raise ValueError(f"--detector {args.detector} must be fitted on ID training data; use `atom-ood eval` "
                         "or the Python API.")
    det = build_detector(args.detector, model, k, None, detector_kwargs(args.detector_arg))
    atk = _build_attack(args, det)
    os.makedirs(args.out, exist_ok=True)
    summary = {"method": args.method, "eps": args.eps, "alpha": args.alpha, "steps": args.steps,
               "restarts": args.restarts, "seed": args.seed, "detector": type(det).__name__,
               "attack": type(atk).__name__, "format": args.format,
               "model_source": args.checkpoint or args.timm or args.robustbench, "sets": {}}
    for name, ds in sets.items():
        s = summary["sets"][name] = _attack_set(args, name, ds, atk, Scorer(det), device)
        if not args.quiet:
            print(f"{name}: {s['n']} images, mean OOD score {s['mean_score_clean']:.4g} -> "
                  f"{s['mean_score_attacked']:.4g}", file=sys.stderr)
    with open(os.path.join(args.out, "attack.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    print(os.path.abspath(args.out))
    return 0
