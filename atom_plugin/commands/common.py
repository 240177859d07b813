"""Argument groups shared by ``atom-ood eval``, ``attack`` and ``bench``.

Choices and help come from the registries (detectors, attacks, tasks, datasets), so a
component registered in the library appears here without touching the CLI.
"""
from __future__ import annotations

import argparse
import ast
import os
from fractions import Fraction
from typing import Any

__all__ = ["parse_fraction", "add_model_args", "load_model", "add_detector_args", "build_detector",
           "detector_kwargs", "add_attack_args", "split_list"]


def parse_fraction(text: str) -> float:
    """``"8/255"`` or ``"0.0314"`` -> float (argparse type)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None


def split_list(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (space- or comma-separated option values)."""
    return [v for item in values or [] for v in item.split(",") if v]


# ------------------------------------------------------------------ model
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (exactly one of --checkpoint, --timm, --robustbench)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH",
                     help="checkpoint of `atom-ood train` (dict with 'model' state_dict, 'num_classes', "
                          "'num_reject'), or a bare state_dict of a SmallCNN (inferred) / --arch model")
    src.add_argument("--timm", metavar="NAME", help="a timm architecture; weights from --weights FILE")
    src.add_argument("--robustbench", metavar="NAME", help="a RobustBench model; weights under --model-dir")
    g.add_argument("--arch", metavar="ARCH", default=None,
                   help="architecture of --checkpoint: 'smallcnn' (inferred from the weights) or a timm name")
    g.add_argument("--weights", metavar="FILE", help="local weights for --timm (.pth/.pt/.safetensors)")
    g.add_argument("--model-dir", metavar="DIR", help="RobustBench model folder (<DIR>/<dataset>/<threat>/<NAME>.pt)")
    g.add_argument("--rb-dataset", default="cifar10", help="RobustBench dataset")
    g.add_argument("--threat-model", default="Linf", help="RobustBench threat model")
    g.add_argument("--num-classes", type=int, metavar="K", help="in-distribution classes K (if not in the checkpoint)")
    g.add_argument("--num-reject", type=int, metavar="R", default=None,
                   help="reject classes R of the model (None: from the checkpoint, else 0)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (None: cuda if available)")


def resolve_device(text: str | None):
    """``--device`` -> ``torch.device``, refusing names torch does not know or CUDA that is absent."""
    import torch

    from .. import distributed as D

    if not text:
        return D.default_device()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r}: not a device; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text!r}: CUDA is not available on this machine; use --device cpu.")
    return dev


def load_model(args) -> tuple[Any, int]:
    """The model of the ``--checkpoint`` / ``--timm`` / ``--robustbench`` options and ``K``."""
    from ..models import head_spec
    from ..pretrained import create_timm_model, load_checkpoint_model, load_robustbench_model

    if args.checkpoint:
        try:
            return load_checkpoint_model(args.checkpoint, num_classes=args.num_classes, num_reject=args.num_reject,
                                         arch=args.arch)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--checkpoint: {err}") from None
        except ValueError as err:
            raise ValueError(f"--checkpoint: {err}") from None
    if args.timm:
        if args.num_classes is None:
            raise ValueError("--timm needs --num-classes K.")
        if not args.weights:
            raise ValueError("--timm needs --weights FILE (nothing is downloaded).")
        if not os.path.isfile(args.weights):
            raise FileNotFoundError(f"--weights {args.weights!r}: no such file.")
        return create_timm_model(args.timm, args.num_classes, checkpoint=args.weights,
                                 num_reject=args.num_reject or 0), args.num_classes
    if not args.model_dir:
        raise ValueError("--robustbench needs --model-dir DIR.")
    model = load_robustbench_model(args.robustbench, args.model_dir, dataset=args.rb_dataset,
                                   threat_model=args.threat_model, num_reject=args.num_reject or 0)
    k = args.num_classes or {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(args.rb_dataset)
    head_spec(model, k)  # checks K against the model's outputs
    return model, k


# ------------------------------------------------------------------ detector
def add_detector_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    from ..detectors import DETECTORS

    g = p.add_argument_group("detector")
    if many:
        g.add_argument("--detectors", nargs="+", default=["auto"], metavar="NAME",
                       help=f"detectors to evaluate (space or comma separated): {DETECTORS.help_text()}")
    else:
        g.add_argument("--detector", default="auto", choices=DETECTORS.names(), metavar="NAME",
                       help=f"OOD score: {DETECTORS.help_text()}")
    g.add_argument("--detector-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the detector's constructor, repeatable "
                        "(e.g. --detector-arg temperature=1000 --detector-arg epsilon=0.0014 for odin)")
    g.add_argument("--fit-samples", type=int, default=5000,
                   help="ID training images used to fit detectors that need fitting (mahalanobis, ...)")


def detector_kwargs(items: list[str]) -> dict[str, Any]:
    """``["temperature=1000", "layers=['a','b']"]`` -> kwargs (values parsed as Python literals)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--detector-arg {item!r}: expected KEY=VALUE, e.g. temperature=1000.")
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val
    return out


def build_detector(name: str, model, k: int, fit_data=None, kwargs: dict | None = None, quiet: bool = False,
                   fit_samples: int = 5000):
    """The registered detector ``name`` on ``model``, fitted on ``fit_data`` when it needs it."""
    import inspect

    from torch.utils.data import DataLoader, Subset

    from ..detectors import DETECTORS, create_detector

    entry = DETECTORS.get(name)
    kwargs = dict(kwargs or {})
    if entry.needs_fit and fit_data is None:
        raise ValueError(f"--detector {name} must be fitted on ID training data: use --data default or "
                         "--data cifar10:ROOT.")
    try:
        sig = inspect.signature(entry.builder)
        sig.bind_partial(model, num_classes=k, **kwargs)
    except TypeError as err:
        raise ValueError(f"--detector-arg for {name}: {err}") from None
    loader = None
    fit_kw: dict[str, Any] = {}
    if entry.needs_fit:
        n = min(len(fit_data), fit_samples)
        loader = DataLoader(Subset(fit_data, range(n)), batch_size=128, shuffle=False)
        fit_params = inspect.signature(entry.builder.fit).parameters if hasattr(entry.builder, "fit") else {}
        if "progress" in fit_params:
            fit_kw["progress"] = not quiet
    return create_detector(name, model, num_classes=k, fit_loader=loader, fit_kwargs=fit_kw, **kwargs)


# ------------------------------------------------------------------ attacks
def add_attack_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    from ..attacks import ATTACKS, list_attacks

    a = p.add_argument_group("attacks")
    a.add_argument("--eps", type=parse_fraction, default=8 / 255, help="L-inf radius, e.g. 8/255")
    a.add_argument("--alpha", type=parse_fraction, default=1 / 255, help="PGD step size, e.g. 1/255")
    a.add_argument("--steps", type=int, default=40, help="attack steps")
    a.add_argument("--restarts", type=int, default=1, help="random restarts")
    linf = list_attacks(threat="linf")
    a.add_argument("--attack", default="pgd", choices=linf, metavar="NAME",
                   help="L-inf attack of the linf / compositional tasks: "
                        + "; ".join(f"{n}: {ATTACKS.get(n).help}" for n in linf).replace("%", "%%"))
    a.add_argument("--attack-version", default="standard", choices=("standard", "fast", "rand"),
                   help="budget of --attack auto (rand: with EOT for randomized defenses)")
    a.add_argument("--corruptions", nargs="+", default=None, metavar="NAME",
                   help="corruption types (None: the 15 common ones)")
    a.add_argument("--severities", nargs="+", type=int, default=None, metavar="S", help="severities (None: 1..5)")
    a.add_argument("--corruption-backend", default=None, choices=("torch", "imagecorruptions"))
    a.add_argument("--corruption-table", default="auto", metavar="TABLE",
                   help="corruption severity constants: auto (by image size), cifar, tinyimagenet, imagenet")
    return a
