"""Evaluate a preprocessing defense end to end: an image-to-image module in front of the classifier.

Input-purification defenses (denoisers, image-to-image translation back to the data
distribution, as in seed paper 004, "OOD to in-distribution mapping") put a module
``defense: images [0, 1] -> images [0, 1]`` in front of the classifier.  To evaluate them
honestly the attacker must see the whole pipeline, so the model handed to the detector,
the attacks and ``atom_plugin.evaluate`` is ``nn.Sequential(defense, classifier)``: every
attack (L-inf PGD, corruption, compositional) goes through the defense.

Defenses built here (``--defenses``):

* ``dae``: a small residual denoising autoencoder, trained for a few seconds to map noisy
  images (Gaussian + uniform L-inf noise) of the in-distribution training set and the
  auxiliary outliers back to the clean image.  Differentiable: plain white-box attacks
  apply, **no BPDA needed**;
* ``blur``: a fixed 3x3 Gaussian blur.  Differentiable, no training;
* ``quantize``: 3-bit colour-depth reduction (feature squeezing).  Its exact gradient is
  zero almost everywhere, so a gradient attack through it sees nothing and the defense
  looks robust for the wrong reason (gradient masking).  ``quantize_bpda`` attacks the
  same pipeline with BPDA (Athalye et al. 2018): the forward pass quantizes, the backward
  pass treats the quantizer as the identity.  ``quantize`` vs ``quantize_bpda`` shows how
  much of the apparent robustness was masking.

The classifier is a small CNN trained with Outlier Exposure on the embedded benchmark;
the detector is MSP on the (defended) classifier.  The comparison table (undefended vs
each defense, four OOD tasks, ID accuracy) is printed and saved to ``--out``.

    python examples/preprocessing_defense.py --out runs/defense           # ~1 min on 2 cores
    python examples/preprocessing_defense.py --quick --out /tmp/defense   # seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Subset

import atom_plugin  # noqa: F401
from atom_plugin import MSP, Comparison, Normalize, SmallCNN, evaluate
from atom_plugin.data import load_default_benchmark
from atom_plugin.training import TrainConfig, train

TASKS = ("natural", "corruption", "linf", "compositional")
DEFENSES = ("dae", "blur", "quantize", "quantize_bpda")


# ------------------------------------------------------------------ defenses
class DenoisingAutoencoder(nn.Module):
    """``x -> clamp(x + r(x), 0, 1)`` with a small conv encoder-decoder ``r`` (starts as the identity)."""

    def __init__(self, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.net(x)).clamp(0.0, 1.0)


class GaussianBlur(nn.Module):
    """Fixed depthwise 3x3 Gaussian blur (sigma 0.8), reflect padding."""

    def __init__(self, channels: int = 3, sigma: float = 0.8) -> None:
        super().__init__()
        g = torch.exp(-torch.arange(-1, 2, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = torch.outer(g, g) / torch.outer(g, g).sum()
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, groups=x.shape[1])


class Quantize(nn.Module):
    """Colour-depth reduction to ``bits`` bits.  ``bpda=True``: identity gradient (straight-through)."""

    def __init__(self, bits: int = 3, bpda: bool = False) -> None:
        super().__init__()
        self.levels, self.bpda = 2 ** bits - 1, bpda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x * self.levels) / self.levels
        return x + (q - x).detach() if self.bpda else q


def train_dae(dae: DenoisingAutoencoder, dataset, steps: int, eps: float, seed: int) -> list[float]:
    """Adam on MSE(dae(x + noise), x); noise = N(0, 0.05^2) + U[-2 eps, 2 eps], per image random strength."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=gen, drop_last=True)
    opt = torch.optim.Adam(dae.parameters(), lr=2e-3)
    losses, step = [], 0
    dae.train()
    while step < steps:
        for x, _ in loader:
            strength = torch.rand(x.shape[0], 1, 1, 1, generator=gen)
            noise = strength * (0.05 * torch.randn(x.shape, generator=gen)
                                + 2 * eps * (2 * torch.rand(x.shape, generator=gen) - 1))
            loss = F.mse_loss(dae((x + noise).clamp(0, 1)), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step >= steps:
                break
    return losses


# ------------------------------------------------------------------ script
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--defenses", nargs="+", choices=DEFENSES, default=list(DEFENSES))
    p.add_argument("--epochs", type=int, default=4, help="OE training epochs of the classifier")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--dae-steps", type=int, default=150, help="denoiser training steps (batch 64)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=10, help="PGD steps of the evaluation")
    p.add_argument("--n-ood", type=int, default=32, help="images per OOD set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("preprocessing_defense_out"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run: seconds, numbers mean nothing")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.width, args.dae_steps, args.steps, args.n_ood = 1, 4, 5, 2, 8
    progress = not args.quiet
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    bench = load_default_benchmark(seed=args.seed, n_aux=600 if args.quick else 3000, n_ood_per_set=args.n_ood)
    torch.manual_seed(args.seed)
    classifier = Normalize(SmallCNN(bench.num_classes, width=args.width), bench.mean, bench.std)
    train_set = Subset(bench.train, range(256)) if args.quick else bench.train
    train(classifier, train_set, bench.aux, TrainConfig(method="oe", epochs=args.epochs, lr=0.05, batch_size=64,
                                                        outlier_batch_size=64, seed=args.seed, progress=progress))
    classifier.eval().requires_grad_(False)

    defenses: dict[str, nn.Module] = {}
    info: dict = {}
    for name in args.defenses:
        if name == "dae":
            dae = DenoisingAutoencoder()
            losses = train_dae(dae, ConcatDataset([train_set, bench.aux]), args.dae_steps, args.eps, args.seed)
            info["dae_loss"] = {"first": losses[0], "last": sum(losses[-10:]) / len(losses[-10:])}
            print(f"denoiser: {args.dae_steps} steps, MSE {losses[0]:.5f} -> {info['dae_loss']['last']:.5f}")
            defenses[name] = dae
        elif name == "blur":
            defenses[name] = GaussianBlur()
        else:
            defenses[name] = Quantize(3, bpda=name == "quantize_bpda")

    id_test = Subset(bench.test, range(128)) if args.quick else bench.test
    ood_sets = dict(list(bench.ood.items())[:3]) if args.quick else bench.ood
    corr = dict(corruptions=["gaussian_noise", "contrast", "pixelate", "defocus_blur"],
                severities=[3] if args.quick else [1, 3, 5])
    pipelines = {"none": classifier}
    pipelines.update({name: nn.Sequential(d.eval(), classifier) for name, d in defenses.items()})
    reports = {}
    for name, model in pipelines.items():
        det = MSP(model, num_classes=bench.num_classes).eval()  # the attacks differentiate through `model`
        rep = evaluate(det, id_test, ood_sets, tasks=TASKS, eps=args.eps, alpha=2.5 * args.eps / args.steps,
                       steps=args.steps, seed=args.seed, progress=progress, name=name, **corr)
        rep.save(out / name, plots=not args.quick)
        reports[name] = rep
    comp = Comparison(reports)
    comp.save(out)
    print(f"\nMSP detector behind each preprocessing defense (eps={args.eps * 255:.0f}/255, {args.steps} PGD steps); "
          "FPR at 95% TPR (ID positive) / AUROC, mean over the OOD sets, percent:")
    print(comp.table())
    if "quantize" in reports and "quantize_bpda" in reports:
        print("quantize vs quantize_bpda: the same model; without BPDA the gradient through rounding is zero, "
              "so L-inf PGD cannot move and the L-inf column only reflects gradient masking.")
    results = {
        "pipelines": {n: {"accuracy": r.id_metrics.get("accuracy"),
                          "fpr": {t: r.get("mean", t, "fpr") for t in TASKS},
                          "auroc": {t: r.get("mean", t, "auroc") for t in TASKS}} for n, r in reports.items()},
        **info, "eps": args.eps, "total_s": round(time.time() - t0, 1), "quick": args.quick,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"report folder {out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
