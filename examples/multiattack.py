"""OOD attacks inside ``torchattacks.MultiAttack``, next to ``OODMultiAttack`` and a classifier attack.

atom_plugin's OOD attacks are ``torchattacks.Attack`` subclasses.  For torchattacks'
bookkeeping an attack's ``model`` is a ``DetectorDecision``: the detector seen as a
2-way classifier, class 0 = "OOD" (score > threshold, rejected), class 1 = "ID"
(accepted).  So with labels ``0`` for OOD inputs, "misclassified" means "the detector
accepts this OOD input", which is what ``torchattacks.MultiAttack`` looks for.  It needs
the decision threshold (``attack.set_threshold(t)``, shared by every attack on the same
detector object), here the score at 95% TPR on in-distribution test data.

The script trains a small CNN with Outlier Exposure on the embedded benchmark (MSP
detector) and runs, on the OOD test images:

* the library's ``OODFGSM``, ``OODPGD``, ``OODAPGD`` alone;
* a stock ``torchattacks.PGD`` on the ``DetectorDecision`` (cross-entropy on the 2-way
  decision logits, pushed away from label 0 = OOD): torchattacks' own code attacking a detector;
* ``torchattacks.MultiAttack([fgsm, pgd, apgd, torchattacks_pgd])``: per image, the first
  attack whose output is accepted; later attacks run only on the images still rejected;
* ``OODMultiAttack([fgsm, pgd, apgd])``: per image, the output with the best attack
  objective over all attacks (no threshold needed; never worse than any single attack);

and, for contrast, the classic attack on the *classifier*: ``torchattacks.PGD`` and
``torchattacks.MultiAttack([FGSM, PGD])`` on in-distribution test images with their class
labels (robust accuracy), plus how many of those adversarial ID images the detector rejects.

    python examples/multiattack.py --out runs/multiattack      # ~30 s on 2 cores
    python examples/multiattack.py --quick --out /tmp/ma       # seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchattacks
from torch.utils.data import Subset

import atom_plugin  # noqa: F401
from atom_plugin import MSP, Normalize, SmallCNN
from atom_plugin.attacks import OODAPGD, OODFGSM, OODPGD, OODMultiAttack
from atom_plugin.data import load_default_benchmark
from atom_plugin.metrics import threshold_at_tpr
from atom_plugin.training import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="OE training epochs")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--eps", type=float, default=4 / 255, help="L-inf radius of every attack")
    p.add_argument("--steps", type=int, default=10, help="PGD / APGD steps")
    p.add_argument("--n-ood", type=int, default=32, help="images per OOD set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("multiattack_out"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run: seconds, numbers mean nothing")
    p.add_argument("--quiet", action="store_true")
    return p


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.as_tensor(ys)


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

    bench = load_default_benchmark(seed=args.seed, n_aux=600 if args.quick else 3000, n_ood_per_set=args.n_ood)
    torch.manual_seed(args.seed)
    model = Normalize(SmallCNN(bench.num_classes, width=args.width), bench.mean, bench.std)
    train_set = Subset(bench.train, range(256)) if args.quick else bench.train
    train(model, train_set, bench.aux, TrainConfig(method="oe", epochs=args.epochs, lr=0.05, batch_size=64,
                                                   outlier_batch_size=64, seed=args.seed, progress=progress))
    model.eval()
    detector = MSP(model).eval()

    x_id, y_id = stack(Subset(bench.test, range(128)) if args.quick else bench.test)
    x_ood = torch.cat([stack(ds)[0] for ds in bench.ood.values()])
    with torch.no_grad():
        thr = threshold_at_tpr(detector.score(x_id).numpy(), 0.95)  # accept as ID iff score <= thr

    def accepted(x: torch.Tensor) -> float:
        with torch.no_grad():
            return (detector.score(x) <= thr).float().mean().item()

    # --- OOD side: the library's attacks, a stock torchattacks attack, and both combiners ---------
    alpha = 2.5 * args.eps / args.steps
    fgsm = OODFGSM(detector, eps=args.eps)
    pgd = OODPGD(detector, eps=args.eps, alpha=alpha, steps=args.steps, seed=args.seed)
    apgd = OODAPGD(detector, eps=args.eps, steps=args.steps, seed=args.seed)
    fgsm.set_threshold(thr)  # shared by every attack on `detector` (one DetectorDecision)
    decision = fgsm.model    # the DetectorDecision: logits [score - thr, thr - score]
    # A stock torchattacks attack restores `model.training` as it found it; the DetectorDecision
    # is a new nn.Module (training mode by default), so put it in eval mode first or the
    # classifier is left in train mode (BatchNorm on batch statistics) after the attack.
    decision.eval()
    ta_pgd = torchattacks.PGD(decision, eps=args.eps, alpha=alpha, steps=args.steps)
    labels_ood = torch.zeros(len(x_ood), dtype=torch.long)  # 0 = "OOD" for the decision model

    rows: dict[str, dict] = {"clean": {"accepted": accepted(x_ood)}}
    singles = {"OODFGSM": fgsm, "OODPGD": pgd, "OODAPGD": apgd, "torchattacks.PGD on decision": ta_pgd}
    objectives = {}
    for name, atk in singles.items():
        torch.manual_seed(args.seed)
        adv = atk(x_ood, labels_ood)
        with torch.no_grad():
            obj = detector.attack_loss(adv)
        objectives[name] = obj
        rows[name] = {"accepted": accepted(adv), "objective": obj.mean().item()}

    multi = torchattacks.MultiAttack([fgsm, pgd, apgd, ta_pgd], verbose=not args.quiet)
    torch.manual_seed(args.seed)
    if not args.quiet:
        print("torchattacks.MultiAttack, cumulative success after each attack:")
    adv_multi = multi(x_ood, labels_ood)
    with torch.no_grad():
        rows["torchattacks.MultiAttack"] = {"accepted": accepted(adv_multi),
                                            "objective": detector.attack_loss(adv_multi).mean().item()}
        assert (adv_multi - x_ood).abs().max() <= args.eps + 1e-6

    best = OODMultiAttack([fgsm, pgd, apgd])
    adv_best = best(x_ood)
    wins = torch.bincount(best.last_winner + 1, minlength=4).tolist()
    rows["OODMultiAttack"] = {"accepted": accepted(adv_best), "objective": best.last_objective.mean().item(),
                              "wins": dict(zip(["clean", "OODFGSM", "OODPGD", "OODAPGD"], wins))}
    # per image, the best-of combiner is at least as good as each of its attacks (same seeds)
    never_worse = all(bool((best.last_objective >= objectives[n] - 1e-5).all())
                      for n in ("OODFGSM", "OODPGD", "OODAPGD"))

    print(f"\nOOD side: MSP detector, {len(x_ood)} OOD test images, eps={args.eps * 255:.0f}/255, "
          f"threshold {thr:.4f} (95% TPR)")
    print(f"  {'attack':<32}{'accepted as ID':>15}{'mean objective':>16}")
    for name, r in rows.items():
        obj = f"{r['objective']:>16.4f}" if "objective" in r else f"{'':>16}"
        print(f"  {name:<32}{r['accepted']:>14.1%}{obj}")
    print(f"  OODMultiAttack wins per image: {rows['OODMultiAttack']['wins']}; never worse than any of its attacks: "
          f"{never_worse}")

    # --- classifier side: stock torchattacks on the K-way classifier -----------------------------
    with torch.no_grad():
        acc_clean = (model(x_id).argmax(1) == y_id).float().mean().item()
    torch.manual_seed(args.seed)
    cls_pgd = torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps)
    cls_multi = torchattacks.MultiAttack([torchattacks.FGSM(model, eps=args.eps), cls_pgd])
    adv_id = cls_pgd(x_id, y_id)
    adv_id_multi = cls_multi(x_id, y_id)
    with torch.no_grad():
        acc_pgd = (model(adv_id).argmax(1) == y_id).float().mean().item()
        acc_multi = (model(adv_id_multi).argmax(1) == y_id).float().mean().item()
        wrong = model(adv_id).argmax(1) != y_id
        rejected = (detector.score(adv_id) > thr)
    flagged = rejected[wrong].float().mean().item() if wrong.any() else float("nan")
    print(f"\nClassifier side: {len(x_id)} ID test images, accuracy {acc_clean:.1%} clean, {acc_pgd:.1%} under "
          f"torchattacks.PGD, {acc_multi:.1%} under torchattacks.MultiAttack([FGSM, PGD]); the MSP detector "
          f"rejects {flagged:.1%} of the misclassified adversarial ID images (vs 5% of clean ID by construction).")

    results = {"threshold": thr, "ood": rows, "oodmulti_never_worse": never_worse,
               "classifier": {"accuracy": acc_clean, "accuracy_pgd": acc_pgd, "accuracy_multi": acc_multi,
                              "adversarial_rejected": flagged},
               "eps": args.eps, "steps": args.steps, "total_s": round(time.time() - t0, 1), "quick": args.quick}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'results.json'} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
