"""Adversarially evaluate a third-party OOD detector (pytorch-ood) through ``ScoreDetector``.

Any differentiable function ``images in [0, 1] -> (B,)`` with "higher = more OOD" becomes
a full detector with ``atom_plugin.ScoreDetector(score_fn, model=classifier)``; every
attack of the library then works on it.  pytorch-ood's detectors follow the same sign
convention (outlier scores, higher = more OOD), and its logit-based detectors
(``EnergyBased``, ``MaxSoftmax``, ...) compute ``predict(x) = predict_logits(model(x))``
without ``torch.no_grad``, so their gradient reaches the image.

The script

1. trains a small CNN classifier with Outlier Exposure for a few epochs on the embedded
   benchmark (digits in-distribution, photo crops as auxiliary outliers);
2. wraps pytorch-ood's ``EnergyBased`` and ``MaxSoftmax`` with ``ScoreDetector`` and checks
   that their scores equal atom_plugin's own ``Energy`` / ``MSP`` detectors;
3. runs every attack on the OOD test images: ``OODFGSM``, ``OODPGD``, ``OODAPGD``
   (white-box L-inf on ``-score``), ``CorruptionAttack`` (black-box), ``CompositionalAttack``
   (corruption then L-inf) and ``OODMultiAttack`` (best of the three gradient attacks),
   and prints the mean OOD score and the share of OOD images accepted as in-distribution
   at the 95%-TPR threshold;
4. evaluates both detectors under the four OOD tasks with ``atom_plugin.evaluate``;
5. shows what happens with a detector that is *not* differentiable: pytorch-ood's
   ``Mahalanobis.predict`` runs under ``torch.no_grad``; gradient attacks refuse it with a
   clear error, the black-box ``CorruptionAttack`` still works.

pytorch-ood is optional (``pip install pytorch-ood``; it is not a dependency of
atom_plugin).  Without it the script says so and uses local functions computing the same
scores, so it always runs.

    python examples/third_party_detector.py --out runs/third_party     # ~30 s on 2 cores
    python examples/third_party_detector.py --quick --out /tmp/tp      # seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

import atom_plugin  # noqa: F401  (first: installs the torchvision compatibility fixes pytorch-ood needs)
from atom_plugin import MSP, Energy, Normalize, ScoreDetector, SmallCNN, evaluate
from atom_plugin.attacks import OODAPGD, OODFGSM, OODPGD, CompositionalAttack, CorruptionAttack, OODMultiAttack
from atom_plugin.data import load_default_benchmark
from atom_plugin.metrics import threshold_at_tpr
from atom_plugin.training import TrainConfig, train

TASKS = ("natural", "corruption", "linf", "compositional")


# ------------------------------------------------------------------ the third-party library
def load_pytorch_ood():
    """pytorch-ood's detector classes, or local stand-ins computing the same scores."""
    try:
        from pytorch_ood.detector import EnergyBased, Mahalanobis, MaxSoftmax

        return EnergyBased, MaxSoftmax, Mahalanobis, True
    except Exception as err:  # ImportError, or a broken install
        print(f"pytorch-ood is not available ({type(err).__name__}: {err}); using local score functions that "
              "compute the same scores (pip install pytorch-ood to run the real thing).")

    class EnergyBased:  # pytorch_ood.detector.EnergyBased: -T logsumexp(z / T)
        def __init__(self, model, t=1.0):
            self.model, self.t = model, t

        def predict(self, x):
            return -self.t * torch.logsumexp(self.model(x) / self.t, dim=1)

    class MaxSoftmax:  # pytorch_ood.detector.MaxSoftmax: -max softmax(z / T)
        def __init__(self, model, t=1.0):
            self.model, self.t = model, t

        def predict(self, x):
            return -torch.softmax(self.model(x) / self.t, dim=1).amax(dim=1)

    class Mahalanobis:  # pytorch_ood.detector.Mahalanobis: predict under no_grad, like the original
        def __init__(self, encoder):
            self.encoder = encoder

        @torch.no_grad()
        def fit(self, loader):
            z, y = zip(*[(self.encoder(xb), yb) for xb, yb in loader])
            z, y = torch.cat(z), torch.cat(y)
            self.mu = torch.stack([z[y == c].mean(0) for c in range(int(y.max()) + 1)])
            c = sum((z[y == k] - self.mu[k]).T @ (z[y == k] - self.mu[k]) for k in range(len(self.mu)))
            self.precision = torch.linalg.inv(c + 1e-6 * torch.eye(z.shape[1]))
            return self

        @torch.no_grad()
        def predict(self, x):
            d = self.encoder(x)[:, None, :] - self.mu[None]
            return 0.5 * torch.einsum("bkd,de,bke->bk", d, self.precision, d).amin(dim=1)

    return EnergyBased, MaxSoftmax, Mahalanobis, False


# ------------------------------------------------------------------ script
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="OE training epochs of the classifier")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=10, help="PGD / APGD steps")
    p.add_argument("--n-ood", type=int, default=32, help="images per OOD set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("third_party_detector_out"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run: seconds, numbers mean nothing")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.width, args.steps, args.n_ood = 1, 4, 2, 8
    progress = not args.quiet
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    EnergyBased, MaxSoftmax, PoodMahalanobis, real = load_pytorch_ood()

    # 1. a classifier (K-way, OE-trained); any nn.Module taking images in [0, 1] works
    bench = load_default_benchmark(seed=args.seed, n_aux=600 if args.quick else 3000, n_ood_per_set=args.n_ood)
    torch.manual_seed(args.seed)
    model = Normalize(SmallCNN(bench.num_classes, width=args.width), bench.mean, bench.std)
    train_set = Subset(bench.train, range(256)) if args.quick else bench.train
    train(model, train_set, bench.aux, TrainConfig(method="oe", epochs=args.epochs, lr=0.05, batch_size=64,
                                                   outlier_batch_size=64, seed=args.seed, progress=progress))
    model.eval()

    # 2. third-party detectors as atom_plugin detectors.  (.eval(): a new nn.Module starts in
    # training mode, and evaluate() restores the detector's mode -- and so the classifier's -- at the end.)
    detectors = {
        "pytorch-ood EnergyBased": ScoreDetector(EnergyBased(model).predict, model=model).eval(),
        "pytorch-ood MaxSoftmax": ScoreDetector(MaxSoftmax(model).predict, model=model).eval(),
    }
    own = {"pytorch-ood EnergyBased": Energy(model).eval(), "pytorch-ood MaxSoftmax": MSP(model).eval()}
    id_test = Subset(bench.test, range(128)) if args.quick else bench.test
    ood_sets = dict(list(bench.ood.items())[:3]) if args.quick else bench.ood
    x_id = torch.stack([id_test[i][0] for i in range(len(id_test))])
    x_ood = torch.cat([torch.stack([ds[i][0] for i in range(len(ds))]) for ds in ood_sets.values()])
    results: dict = {"pytorch_ood": real, "detectors": {}}
    for name, det in detectors.items():
        with torch.no_grad():
            diff = (det.score(x_id[:64]) - own[name].score(x_id[:64])).abs().max().item()
        print(f"{name}: max |score - atom_plugin {type(own[name]).__name__}| = {diff:.2e}")
        results["detectors"][name] = {"max_abs_diff_to_builtin": diff}

    # 3. every attack on the OOD test images
    corr = dict(corruptions=["gaussian_noise", "contrast", "pixelate", "defocus_blur"],
                severities=[3] if args.quick else [1, 3, 5])
    for name, det in detectors.items():
        with torch.no_grad():
            thr = threshold_at_tpr(det.score(x_id).numpy(), 0.95)  # accept as ID iff score <= thr
        pgd = OODPGD(det, eps=args.eps, alpha=2.5 * args.eps / args.steps, steps=args.steps, seed=args.seed)
        fgsm = OODFGSM(det, eps=args.eps)
        apgd = OODAPGD(det, eps=args.eps, steps=args.steps, seed=args.seed)
        attacks = {
            "clean": None, "OODFGSM": fgsm, "OODPGD": pgd, "OODAPGD": apgd,
            "CorruptionAttack": CorruptionAttack(det, seed=args.seed, **corr),
            "CompositionalAttack": CompositionalAttack(det, eps=args.eps, alpha=2.5 * args.eps / args.steps,
                                                       steps=args.steps, seed=args.seed, **corr),
            "OODMultiAttack": OODMultiAttack([fgsm, pgd, apgd]),
        }
        rows = {}
        print(f"\n{name} (threshold {thr:.4g} at 95% TPR): {len(x_ood)} OOD test images")
        print(f"  {'attack':<20}{'mean score':>12}{'accepted as ID':>16}")
        for aname, atk in attacks.items():
            adv = x_ood if atk is None else atk(x_ood)
            assert (adv - x_ood).abs().max() <= args.eps + 1e-6 or aname in ("CorruptionAttack", "CompositionalAttack")
            with torch.no_grad():
                s = det.score(adv)
            rows[aname] = {"mean_score": s.mean().item(), "accepted": (s <= thr).float().mean().item()}
            print(f"  {aname:<20}{rows[aname]['mean_score']:>12.4f}{rows[aname]['accepted']:>15.1%}")
        results["detectors"][name].update(threshold=thr, attacks=rows)

    # 4. the full evaluation protocol on each detector
    reports = {}
    for name, det in detectors.items():
        rep = evaluate(det, id_test, ood_sets, tasks=TASKS, eps=args.eps, alpha=2.5 * args.eps / args.steps,
                       steps=args.steps, seed=args.seed, progress=progress, name=name, **corr)
        slug = name.split()[-1].lower()
        rep.save(out / slug, plots=not args.quick)
        reports[name] = rep
        results["detectors"][name]["fpr"] = {t: rep.get("mean", t, "fpr") for t in TASKS}
        results["detectors"][name]["auroc"] = {t: rep.get("mean", t, "auroc") for t in TASKS}
    comp = atom_plugin.Comparison(reports)
    comp.save(out)
    print("\nFPR at 95% TPR (ID positive) / AUROC, mean over the OOD sets, percent:")
    print(comp.table())

    # 5. a detector without gradients: only black-box attacks apply
    encoder = nn.Sequential(model.model.features, nn.Flatten())
    mahal = PoodMahalanobis(lambda x: encoder(model.normalize(x)))
    if hasattr(mahal, "to"):
        mahal.to(x_id.device)  # pytorch-ood detectors keep their own device
    mahal.fit(DataLoader(Subset(bench.train, range(256 if args.quick else 1000)), batch_size=128))
    det = ScoreDetector(mahal.predict, model=model).eval()
    try:
        OODPGD(det, eps=args.eps, steps=1)(x_ood[:4])
        refused = None
    except ValueError as err:
        refused = str(err)
        print(f"\npytorch-ood Mahalanobis (predict under no_grad), OODPGD refuses it:\n  ValueError: {err}")
    catk = CorruptionAttack(det, seed=args.seed, **corr)
    adv = catk(x_ood)
    with torch.no_grad():
        thr = threshold_at_tpr(det.score(x_id).numpy(), 0.95)
        acc_clean = (det.score(x_ood) <= thr).float().mean().item()
        acc_adv = (det.score(adv) <= thr).float().mean().item()
    print(f"  CorruptionAttack (black-box) still runs: OOD accepted {acc_clean:.1%} clean -> {acc_adv:.1%}")
    results["mahalanobis_no_grad"] = {"gradient_attack_refused": refused, "accepted_clean": acc_clean,
                                      "accepted_corruption": acc_adv}
    results["total_s"] = round(time.time() - t0, 1)
    results["quick"] = args.quick
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nreport folder {out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
