"""Wrap a timm model loaded from a local weights file with a K+1 head, train ATOM briefly, evaluate.

What a user with a timm checkpoint on disk (e.g. ImageNet ``resnet18.pth`` or a
``model.safetensors`` from the hub, copied over by hand) does:

1. ``create_timm_model(name, num_classes=K, checkpoint=file, num_reject=1)``: timm builds
   the architecture, loads the backbone from the file (never downloading), replaces the
   classifier by a ``K + 1``-way head (K classes + 1 reject class) and wraps the model in
   ``Normalize`` with the checkpoint's mean/std, so it takes images in [0, 1];
2. ``atom_plugin.training.train(..., method="atom")``: informative outlier mining + PGD on
   the mined outliers (ATOM, Algorithm 1), here for a few epochs on the embedded benchmark
   (digits as in-distribution, crops of photos as auxiliary outliers);
3. ``atom_plugin.evaluate``: the paper's four OOD tasks (natural, corruption, L-inf,
   compositional) with the reject-class score; the report folder is written to ``--out``.

Without ``--checkpoint`` the script first writes a stand-in weights file (the same
architecture, randomly initialised, ``torch.save(model.state_dict())``) to
``<out>/weights.pth`` and loads it back, so every step above runs offline; pass your own
file to start from pretrained weights (its ImageNet head is dropped, the backbone kept).

    python examples/timm_atom.py --out runs/timm_atom                 # resnet10t, ~1 min on 2 cores
    python examples/timm_atom.py --checkpoint resnet18.pth --model resnet18 --out runs/r18
    python examples/timm_atom.py --quick --out /tmp/timm_atom         # seconds, meaningless numbers
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

import atom_plugin  # noqa: F401  (first: installs the torchvision/timm compatibility fixes)
from atom_plugin import as_detector, evaluate, head_spec
from atom_plugin.data import load_default_benchmark
from atom_plugin.pretrained import create_timm_model
from atom_plugin.training import TrainConfig, train

TASKS = ("natural", "corruption", "linf", "compositional")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet10t", help="timm model name (timm.list_models())")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="local weights file (.pth/.pt/.bin/.safetensors); default: write a random stand-in")
    p.add_argument("--epochs", type=int, default=3, help="ATOM training epochs")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--eps", type=float, default=8 / 255, help="L-inf radius (training and evaluation)")
    p.add_argument("--eval-steps", type=int, default=10, help="PGD steps of the evaluation attack")
    p.add_argument("--eval-examples", type=int, default=64, help="test images per OOD set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("timm_atom_out"), help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run (test_byobnet, 1 short epoch, few images): seconds, numbers mean nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.model = "test_byobnet" if args.model == "resnet10t" else args.model
        args.epochs, args.eval_steps, args.eval_examples = 1, 2, 8
    progress = not args.quiet
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(args.seed)

    bench = load_default_benchmark(seed=args.seed, n_aux=600 if args.quick else 3000,
                                   n_ood_per_set=args.eval_examples)
    k = bench.num_classes

    # 1. the local weights file (a stand-in unless the user passes one)
    ckpt = args.checkpoint
    if ckpt is None:
        import timm

        ckpt = out / "weights.pth"
        torch.save(timm.create_model(args.model, pretrained=False).state_dict(), ckpt)  # 1000-class head
        print(f"no --checkpoint given: wrote a randomly initialised {args.model} stand-in to {ckpt}")
    model = create_timm_model(args.model, num_classes=k, checkpoint=str(ckpt), num_reject=1)
    kk, r = head_spec(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded {args.model} from {ckpt}: {n_params / 1e6:.2f} M parameters, head K={kk} + R={r} reject class, "
          f"normalization mean={tuple(round(v, 3) for v in model.mean.flatten().tolist())}")

    # 2. ATOM training (small mining pool: N candidates, n kept, the q-quantile skipped)
    train_set = Subset(bench.train, range(192)) if args.quick else bench.train
    pool = min(len(bench.aux), 2000)
    cfg = TrainConfig(method="atom", epochs=args.epochs, lr=args.lr, batch_size=64,
                      outlier_batch_size=32 if args.quick else 64, eps=args.eps, alpha=2 / 255,
                      steps=1 if args.quick else 5, q=0.125, pool_size=pool, mined_size=pool // 2,
                      seed=args.seed, progress=progress, log_every=10)
    t_train = time.time()
    train(model, train_set, bench.aux, cfg, out_dir=out / "train")
    t_train = time.time() - t_train

    # 3. evaluation under the four OOD tasks (reject-class score = softmax[K])
    detector = as_detector(model)  # a K+1 model -> RejectClass
    rep = evaluate(detector, bench.test, bench.ood, tasks=TASKS, eps=args.eps, alpha=2 / 255,
                   steps=args.eval_steps, corruptions=["gaussian_noise", "contrast", "pixelate"],
                   severities=[3] if args.quick else [1, 3, 5], seed=args.seed, progress=progress,
                   max_examples_per_set=64 if args.quick else None, name=f"ATOM {args.model}")
    rep.save(out, plots=not args.quick)
    print(rep.table())
    results = {
        "model": args.model, "checkpoint": str(ckpt), "num_classes": kk, "num_reject": r,
        "accuracy": rep.id_metrics.get("accuracy"),
        "fpr": {t: rep.get("mean", t, "fpr") for t in TASKS},
        "auroc": {t: rep.get("mean", t, "auroc") for t in TASKS},
        "train_s": round(t_train, 1), "total_s": round(time.time() - t0, 1), "quick": args.quick,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"ID accuracy {results['accuracy']:.3f}; report folder {out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
