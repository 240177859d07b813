"""``atom-ood train``: train one detector (ATOM, NTOM, OE, ACET, ALOE, AOE).

Examples::

    # ATOM on the embedded digits benchmark with every default (N, n derived from its 5000
    # auxiliary images; the demo's settings: --epochs 14 --q 0 -N 2500 -n 1344)
    atom-ood train --out runs/atom
    atom-ood train --method atom --epochs 10 --q 0 --pool-size 2500 --mined-size 1344 --out runs/atom2
    # OE on CIFAR-10 with the 300K random images, a timm backbone, paper defaults otherwise
    atom-ood train --method oe --data cifar10:/data --aux random300k:/data --timm resnet18 --out runs/oe
    # continue an interrupted run (same options, same --out); --overwrite replaces a finished one
    atom-ood train --method atom ... --out runs/atom --resume
    # several GPUs / CPU processes
    torchrun --nproc_per_node=4 -m atom_plugin.cli train --method atom --data cifar10:/data ...

The checkpoint ``<out>/last.pt`` is read by ``atom-ood eval --checkpoint <out>/last.pt``.
``--out`` is checked before any work (the out-dir rule of
:func:`atom_plugin.training.checkpoint.prepare_out_dir`): a file, a path under a file or
an unwritable folder is refused, and so is a folder that holds a run unless ``--resume``
or ``--overwrite`` is given.

Mining sizes: the paper's ``N`` = 400,000 and ``n`` = 100,000 (CIFAR-10) need at least
400,000 auxiliary images.  Without ``--pool-size`` / ``--mined-size`` the command uses
``N = min(400000, len(aux))`` and ``n = N / 4`` (the paper's ratio), so the defaults work
on the embedded data (5000 images: N = 5000, n = 1250) and equal the paper's on
300K Random Images / ImageNet-RC.
"""
from __future__ import annotations

import argparse
import sys

from .common import parse_fraction

__all__ = ["add_parser", "run"]


PAPER_POOL_SIZE = 400_000  # ATOM paper, CIFAR-10 (Sec. 5.1)
PAPER_MINED_SIZE = 100_000
DEMO_WIDTH = 16  # atom_plugin.demo.DemoSettings.width


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" once, only to options with a help text and a meaningful default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not text or "default" in text or action.default in (None, False, argparse.SUPPRESS) \
                or action.option_strings == [] or action.required:
            return text
        default = action.default
        if isinstance(default, float) and default not in (0.0, 1.0):
            from fractions import Fraction

            frac = Fraction(default).limit_denominator(1000)
            if abs(float(frac) - default) < 1e-12 and frac.denominator > 15 and 255 % frac.denominator == 0:
                return f"{text} (default: {frac.numerator}/{frac.denominator})"
        return text + " (default: %(default)s)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..training.config import METHODS, TrainConfig

    d = TrainConfig.__dataclass_fields__
    p = subparsers.add_parser(
        "train", help="train a robust OOD detector (ATOM, NTOM, OE, ACET, ALOE, AOE)",
        description="Train one OOD detector with informative outlier mining (ATOM/NTOM) or a baseline. "
                    "Defaults are the ATOM paper's CIFAR-10 settings.",
        formatter_class=_HelpFormatter)
    p.add_argument("--method", choices=METHODS, default="atom", help="training method")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="default", metavar="KIND:PATH",
                   help="in-distribution training set: 'default' (embedded digits) or cifar10:/path, "
                        "cifar100:/path, svhn:/path")
    g.add_argument("--aux", default="default", metavar="KIND:PATH",
                   help="auxiliary outliers: 'default' (embedded photo crops) or random300k:/path, "
                        "imagenet_rc:/path, folder:/path")
    g.add_argument("--seed", type=int, default=0, help="seed of data order, mining candidates, attacks, init")
    g = p.add_argument_group("model")
    g.add_argument("--timm", metavar="NAME", help="a timm architecture (random init) instead of SmallCNN")
    g.add_argument("--weights", metavar="FILE", help="local weights for --timm (never downloaded)")
    g.add_argument("--width", type=int, default=DEMO_WIDTH,
                   help="SmallCNN width when --timm is not given, as in the demo")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"].default, help="training epochs")
    g.add_argument("--lr", type=float, default=d["lr"].default, help="SGD learning rate")
    g.add_argument("--milestones", type=int, nargs="+", help="lr decay epochs (default: 50/75/90%% of --epochs)")
    g.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="ID images per step")
    g.add_argument("--outlier-batch-size", type=int, default=d["outlier_batch_size"].default,
                   help="outlier images per step")
    g.add_argument("--lam", "--lambda", dest="lam", type=float, default=None,
                   help="outlier-loss weight (default: 1 for atom/ntom/acet, 0.5 for oe/aloe/aoe)")
    g = p.add_argument_group("informative outlier mining (atom, ntom)")
    g.add_argument("--q", type=float, default=d["q"].default, help="window start, 0 <= q <= 1 - n/N")
    g.add_argument("-N", "--pool-size", dest="pool_size", type=int, default=None,
                   help=f"candidates scored per epoch (default: min({PAPER_POOL_SIZE}, auxiliary images); "
                        f"paper: {PAPER_POOL_SIZE})")
    g.add_argument("-n", "--mined-size", dest="mined_size", type=int, default=None,
                   help=f"outliers kept per epoch (default: N/4; paper: {PAPER_MINED_SIZE})")
    g = p.add_argument_group("training attack")
    g.add_argument("--eps", type=parse_fraction, default=d["eps"].default, help="L-inf radius (e.g. 8/255)")
    g.add_argument("--alpha", type=parse_fraction, default=d["alpha"].default, help="PGD step size")
    g.add_argument("--steps", type=int, default=d["steps"].default, help="PGD steps")
    g.add_argument("--adv-fraction", type=float, default=d["adv_fraction"].default,
                   help="attacked share of each outlier batch")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="DIR", help="checkpoint/log folder (last.pt, metrics.jsonl)")
    g.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if it exists")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that holds a run, deleting its checkpoints and logs")
    g.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda if available)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    g.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision on CUDA")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    g.add_argument("--tensorboard", action="store_true", help="also log to <out>/tensorboard")
    g.add_argument("--keep-checkpoints", type=int, default=0, metavar="K", help="also keep epoch_XXXX.pt every K epochs")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def _datasets(args):
    from ..data import load_dataset, load_default_benchmark

    bench = None
    if args.data == "default" or args.aux == "default":
        bench = load_default_benchmark(seed=args.seed)
    if args.data == "default":
        train_set, k, mean, std = bench.train, bench.num_classes, bench.mean, bench.std
    else:
        kind, sep, path = args.data.partition(":")
        if not sep or kind not in ("cifar10", "cifar100", "svhn"):
            raise ValueError(f"--data {args.data!r}: expected 'default', cifar10:PATH, cifar100:PATH or svhn:PATH.")
        train_set = load_dataset(kind, path, split="train")
        k = 100 if kind == "cifar100" else 10
        mean = std = None
    if args.aux == "default":
        aux_set = bench.aux
    else:
        kind, sep, path = args.aux.partition(":")
        if not sep:
            raise ValueError(f"--aux {args.aux!r}: expected 'default' or KIND:PATH (e.g. random300k:/data).")
        aux_set = load_dataset(kind, path, split="train", as_ood=True)
    if mean is None:
        mean, std = _channel_stats(train_set)
    return train_set, aux_set, k, mean, std


def _channel_stats(ds, n: int = 2000):
    import torch

    idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist()
    x = torch.stack([ds[i][0] for i in idx])
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def mining_sizes(num_aux: int, pool_size: int | None = None, mined_size: int | None = None) -> tuple[int, int]:
    """``(N, n)`` for ``num_aux`` auxiliary images: the given values, else ``N = min(400000,
    num_aux)`` and ``n = N / 4`` (the paper's 400,000 / 100,000 on CIFAR-10)."""
    n_pool = pool_size if pool_size is not None else min(PAPER_POOL_SIZE, num_aux)
    n_mined = mined_size if mined_size is not None else max(1, round(n_pool * PAPER_MINED_SIZE / PAPER_POOL_SIZE))
    return n_pool, n_mined


def run(args) -> int:
    import torch

    from .. import distributed as dist_utils
    from .._validation import check_images
    from ..models import Normalize, SmallCNN, with_reject_head
    from ..training import MINING_METHODS, TrainConfig, Trainer
    from ..training.checkpoint import prepare_out_dir

    overwrite = bool(getattr(args, "overwrite", False))
    if args.resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them.")
    # the out-dir rule, checked before any work (nothing is created or deleted yet)
    prepare_out_dir(args.out, resume=args.resume, overwrite=overwrite, main=False)
    dist_utils.init_from_env()
    train_set, aux_set, k, mean, std = _datasets(args)
    pool_size, mined_size = mining_sizes(len(aux_set), args.pool_size, args.mined_size)
    cfg = TrainConfig(method=args.method, epochs=args.epochs, lr=args.lr, milestones=args.milestones,
                      batch_size=args.batch_size, outlier_batch_size=args.outlier_batch_size, lam=args.lam,
                      q=args.q, pool_size=pool_size, mined_size=mined_size, eps=args.eps,
                      alpha=args.alpha, steps=args.steps, adv_fraction=args.adv_fraction, seed=args.seed,
                      num_workers=args.num_workers, amp=args.amp, channels_last=args.channels_last,
                      progress=not args.quiet, tensorboard=args.tensorboard, keep_checkpoints=args.keep_checkpoints)
    if cfg.mines and pool_size > len(aux_set):
        raise ValueError(f"--pool-size (N = {pool_size}) exceeds the {len(aux_set)} auxiliary images of --aux "
                         f"{args.aux!r}; pass at most {len(aux_set)} or omit it (derived from the data).")
    if cfg.mines and (args.pool_size is None or args.mined_size is None) and not args.quiet \
            and dist_utils.is_main_process():
        print(f"mining: N = {pool_size}, n = {mined_size} ({len(aux_set)} auxiliary images; paper: "
              f"N = {PAPER_POOL_SIZE}, n = {PAPER_MINED_SIZE})", file=sys.stderr)
    r = 1 if args.method in MINING_METHODS else 0
    torch.manual_seed(args.seed)
    if args.timm:
        from ..pretrained import create_timm_model

        # pretrained weights expect the inputs normalized as in their training (timm's
        # pretrained_cfg mean/std); a randomly initialised model uses the data's statistics
        stats = {} if args.weights else {"mean": mean, "std": std}
        model = create_timm_model(args.timm, k, checkpoint=args.weights, num_reject=r, **stats)
        arch = args.timm
    else:
        model = Normalize(SmallCNN(k, in_chans=len(mean), width=args.width), mean, std)
        if r:
            model = with_reject_head(model, k)
        arch = "smallcnn"
    # the channel/dtype rule, before any work: the data's images must fit the model
    check_images(torch.as_tensor(train_set[0][0]).unsqueeze(0), f"--data {args.data!r} images", model=model)
    check_images(torch.as_tensor(aux_set[0][0]).unsqueeze(0), f"--aux {args.aux!r} images", model=model)
    from .common import resolve_device

    device = resolve_device(args.device)
    # everything is checked: only now may --overwrite delete the old run's files
    prepare_out_dir(args.out, resume=args.resume, overwrite=overwrite, main=dist_utils.is_main_process())
    trainer = Trainer(model, train_set, aux_set, cfg, num_classes=k, out_dir=args.out, device=device,
                      resume=args.resume, meta={"arch": arch})
    if trainer.epoch and not args.quiet and dist_utils.is_main_process():
        print(f"resuming from epoch {trainer.epoch} of {cfg.epochs}", file=sys.stderr)
    trainer.fit()
    if dist_utils.is_main_process():
        print(f"checkpoint: {trainer.checkpoint_path}")
    # the DDP model (and its reducer) must go before the process group: destroying the
    # group under a live DDP module could hang the process at exit (gloo, seen in tests)
    del trainer, model
    dist_utils.destroy()
    return 0
