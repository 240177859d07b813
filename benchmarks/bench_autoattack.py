"""OOD AutoAttack vs its components and OODPGD-40, OODSquare vs OODPGD, on the embedded benchmark.

Two small models trained briefly on the embedded digits benchmark (``SmallCNN``, 32x32):
an outlier-exposure model (detectors MSP and Energy; Mahalanobis with the paper's logistic
objective, eq. 116, which saturates) and a K+1 model trained with NTOM (detector
RejectClass), plus gradient-masked pipelines: the K+1 and the OE model behind 3-bit input
quantization ``round(7 x) / 7`` (zero gradient, no BPDA).

For every detector, on OOD images from every embedded OOD set, at L-inf eps 8/255 and the
threshold at 95% TPR on natural ID test images:

* natural FPR; OODPGD-40 (step 2/255, random start) FPR and cost;
* each component of ``OODAutoAttack(version=--version)`` run **alone with the same budget
  and threshold** (APGD on the detector objective, APGD on the margin objective, Square) and
  the AutoAttack itself: FPR, cost in forwards/backwards (in images) relative to OODPGD-40,
  wins per component, and whether every image a component gets accepted is accepted by
  AutoAttack (``auto_superset``);
* OODSquare alone (``--square-queries``, p_init 0.8): its FPR increase as a fraction of
  OODPGD-40's (target >= 80% on differentiable detectors; on the quantized pipeline Square
  should beat OODPGD).

    python benchmarks/bench_autoattack.py --threads 2            # ~15-30 min on a loaded 2-core CPU
    python benchmarks/bench_autoattack.py --quick                 # smoke run

``--checkpoints DIR`` evaluates the models of ``atom-ood demo --out DIR`` instead of training
its own (``DIR/oe/train/last.pt``, ``DIR/atom/train/last.pt``, loaded with
``atom_plugin.pretrained.load_checkpoint_model``; 32x32 SmallCNNs trained on the same embedded
benchmark): on the OE model MSP, Energy, Mahalanobis with eq. 116 (``"logistic"``) and with
the library's default non-saturating objective (``"logit"``), pytorch-ood's Mahalanobis through
``from_pytorch_ood``; on the ATOM model RejectClass.  Two **saturated** eq. 116 Mahalanobis
detectors of the OE model: the regression fitted on FGSM negatives (Lee et al.'s and the
paper's default, ``fit`` without ``ood_loader``: OOD logits of 100-2000 on the test OOD
sets), and the auxiliary-outlier fit with its logistic weights and intercept x100 (what a
weakly regularised fit gives on separable data: the same ranking, hence the same attainable
FPR as the unscaled detector, with eq. 116's gradient exactly zero on most OOD images).

    python benchmarks/bench_autoattack.py --checkpoints /tmp/demo --threads 1 --n-ood 120 \
        --square-queries 200 --only saturated "logit, default" \
        --out benchmarks/results/attack_autoattack_demo_saturated_n120.json

    python benchmarks/bench_autoattack.py --checkpoints /tmp/demo --threads 2 --n-ood 48 \
        --square-queries 200 --out benchmarks/results/attack_autoattack_demo.json

Every row also records ``zero_grad_fraction`` (OOD images whose attack objective has an
exactly zero input gradient at the clean point: saturation / masking) and
``fpr_auto_not_pgd40`` (OOD images AutoAttack gets accepted and OODPGD-40 does not).

Timings are wall-clock on a shared machine (the JSON records the load average).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import _common as C  # noqa: E402
import atom_plugin  # noqa: E402,F401


class Quantize3Bit(nn.Module):
    """``model(round(7 x) / 7)``: 3-bit input quantization, no BPDA (zero input gradient)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for a in ("ood_num_classes", "ood_num_reject"):
            if hasattr(model, a):
                setattr(self, a, getattr(model, a))

    def forward(self, x):
        return self.model(torch.round(x * 7) / 7)


def _images(ds, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return torch.stack([ds[i][0] for i in idx])


def _train(bench, method: str, args, device):
    from atom_plugin.models import Normalize, SmallCNN, with_reject_head
    from atom_plugin.training import train

    torch.manual_seed(args.seed)
    model = Normalize(SmallCNN(bench.num_classes, width=args.width), bench.mean, bench.std)
    kw = {}
    if method == "ntom":
        model = with_reject_head(model, bench.num_classes)
        kw = dict(pool_size=args.pool, mined_size=args.pool // 2, q=0.125)
    return train(model, bench.train, bench.aux, method=method, epochs=args.epochs, lr=0.1, batch_size=64,
                 outlier_batch_size=64, seed=args.seed, progress=False, device=device, **kw).to(device).eval()


def _run(atk, x, bs):
    outs, cost = [], {"forwards": 0, "backwards": 0, "queries": 0}
    for i in range(0, x.shape[0], bs):
        outs.append(atk(x[i:i + bs]))
        for k, v in (atk.last_cost or {}).items():
            if k in cost:
                cost[k] += v
    return torch.cat(outs), cost


def _scores(det, x, bs=256):
    with torch.no_grad():
        return torch.cat([det.score(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def _zero_grad_fraction(det, x, bs):
    """Fraction of images whose attack objective has an exactly zero input gradient at ``x``."""
    zero = []
    for i in range(0, x.shape[0], bs):
        xb = x[i:i + bs].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(det.attack_loss(xb).sum(), xb)
        zero.append(g.flatten(1).abs().amax(1) == 0)
    return torch.cat(zero).float().mean().item()


def _demo_detectors(ckpt_dir: Path, bench, device):
    """Detector factories on the demo's two checkpoints (see the module docstring)."""
    from atom_plugin.detectors import MSP, Energy, Mahalanobis, RejectClass, from_pytorch_ood, pytorch_ood_detector
    from atom_plugin.pretrained import load_checkpoint_model

    models = {}
    for m in ("oe", "atom"):
        path = ckpt_dir / m / "train" / "last.pt"
        if not path.is_file():
            raise SystemExit(f"--checkpoints {ckpt_dir}: {path} is missing (run `atom-ood demo --out {ckpt_dir}`).")
        models[m] = load_checkpoint_model(str(path))[0].to(device).eval()
    fit_id = DataLoader(bench.train, batch_size=128)

    def maha(objective, negatives="aux", sharpen=1.0):
        d = Mahalanobis(models["oe"], attack_objective=objective)
        d.fit(fit_id, DataLoader(bench.aux, batch_size=128) if negatives == "aux" else None)
        with torch.no_grad():  # the same ranking with a sharper logistic (a weakly regularised fit)
            d.coef.mul_(sharpen)
            d.intercept.mul_(sharpen)
        return d

    dets = {"demo oe/msp": lambda: MSP(models["oe"]), "demo oe/energy": lambda: Energy(models["oe"]),
            "demo oe/mahalanobis (logistic, eq. 116)": lambda: maha("logistic"),
            "demo oe/mahalanobis (logit, default)": lambda: maha("logit"),
            "demo oe/mahalanobis (logistic, eq. 116, FGSM negatives: saturated)": lambda: maha("logistic", "fgsm"),
            "demo oe/mahalanobis (logistic, eq. 116, weights x100: saturated)": lambda: maha("logistic", sharpen=100.0),
            "demo oe/pytorch-ood Mahalanobis (adapter)":
                lambda: from_pytorch_ood(pytorch_ood_detector("Mahalanobis", models["oe"]), models["oe"], fit_id),
            "demo atom/reject": lambda: RejectClass(models["atom"])}
    return dets, {m: str(ckpt_dir / m / "train" / "last.pt") for m in models}


def evaluate_detector(name, det, x_id, x_ood, args):
    from atom_plugin.attacks import OODAPGD, OODAutoAttack, OODPGD, OODSquare, margin_objective

    thr = torch.quantile(_scores(det, x_id), 0.95).item()
    s0 = _scores(det, x_ood)
    acc0 = s0 <= thr
    fpr = lambda acc: acc.float().mean().item()  # noqa: E731
    row = {"detector": name, "threshold": thr, "fpr_natural": fpr(acc0)}
    if getattr(det, "differentiable", True):
        row["zero_grad_fraction"] = _zero_grad_fraction(det, x_ood, args.batch)
    timings = {}

    def attack(label, atk):
        t = time.perf_counter()
        adv, cost = _run(atk, x_ood, args.batch)
        timings[label] = time.perf_counter() - t
        acc = _scores(det, adv) <= thr
        return acc, cost

    acc_pgd, c_pgd = attack("pgd40", OODPGD(det, eps=args.eps, alpha=2 / 255, steps=40, seed=args.seed))
    row.update(fpr_pgd40=fpr(acc_pgd), pgd40_forwards=c_pgd["forwards"], pgd40_backwards=c_pgd["backwards"])

    auto = OODAutoAttack(det, eps=args.eps, version=args.version, threshold=thr, seed=args.seed)
    b = auto.budget
    es = dict(threshold=thr, early_stop=True)
    comps = {}
    if getattr(det, "differentiable", True):
        comps["apgd"] = OODAPGD(det, eps=args.eps, steps=b["apgd_steps"], seed=args.seed, **es)
        m = OODAPGD(det, eps=args.eps, steps=b["apgd_steps"], seed=args.seed, **es)
        m._objective_fn = margin_objective(det)[0]
        comps["apgd-margin"] = m
    comps["square"] = OODSquare(det, eps=args.eps, n_queries=b["n_queries"], p_init=b["p_init"], seed=args.seed, **es)
    acc_auto, c_auto = attack("auto", auto)
    superset = True
    for cname, atk in comps.items():
        acc_c, c_c = attack(cname, atk)
        superset &= bool(torch.all(acc_auto | ~acc_c))
        row[f"fpr_{cname}"] = fpr(acc_c)
        row[f"{cname}_forwards"] = c_c["forwards"]
    row.update(fpr_auto=fpr(acc_auto), fpr_auto_not_pgd40=fpr(acc_auto & ~acc_pgd),
               auto_forwards=c_auto["forwards"], auto_backwards=c_auto["backwards"],
               auto_queries=c_auto["queries"], auto_superset=superset,
               auto_forwards_vs_pgd40=c_auto["forwards"] / max(c_pgd["forwards"], 1),
               auto_passes_vs_pgd40=(c_auto["forwards"] + c_auto["backwards"])
               / max(c_pgd["forwards"] + c_pgd["backwards"], 1),
               auto_fpr_ge_each_component=all(fpr(acc_auto) >= row[f"fpr_{c}"] for c in comps))
    sq = OODSquare(det, eps=args.eps, n_queries=args.square_queries, p_init=0.8, seed=args.seed, **es)
    acc_sq, c_sq = attack("square_alone", sq)
    inc_pgd = row["fpr_pgd40"] - row["fpr_natural"]
    inc_sq = fpr(acc_sq) - row["fpr_natural"]
    row.update(fpr_square_alone=fpr(acc_sq), square_queries=args.square_queries, square_alone_forwards=c_sq["forwards"],
               square_vs_pgd40_increase=(inc_sq / inc_pgd) if inc_pgd > 0 else None,
               square_beats_pgd40=fpr(acc_sq) > row["fpr_pgd40"])
    row["seconds"] = timings
    return row


def main(argv=None) -> int:
    p = C.parser(__doc__.split("\n\n")[0], "attack_autoattack.json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pool", type=int, default=2000, help="NTOM mining pool (mined: half)")
    p.add_argument("--n-id", type=int, default=300)
    p.add_argument("--n-ood", type=int, default=120)
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--version", default="fast", help="OODAutoAttack version (fast / standard)")
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="evaluate the models of `atom-ood demo --out DIR` (DIR/oe/train/last.pt, "
                        "DIR/atom/train/last.pt) instead of training two")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.epochs, args.n_id, args.n_ood, args.square_queries, args.pool = 4, 1, 64, 24, 50, 600
    device = C.setup(args)
    info = C.machine_info(args.device)
    from atom_plugin.data import load_default_benchmark
    from atom_plugin.detectors import MSP, Energy, Mahalanobis, RejectClass

    bench = load_default_benchmark(seed=args.seed, n_aux=max(args.pool, 2000))
    models: dict = {}
    train_s: dict = {}

    def model(method):  # trained on first use (--only may need one of the two)
        if method not in models:
            t0 = time.perf_counter()
            models[method] = _train(bench, method, args, device)
            train_s[method] = time.perf_counter() - t0
        return models[method]
    x_id = _images(bench.test, args.n_id, args.seed).to(device)
    per = max(1, args.n_ood // len(bench.ood))
    x_ood = torch.cat([_images(ds, per, args.seed + i) for i, ds in enumerate(bench.ood.values())]).to(device)

    def maha():
        d = Mahalanobis(model("oe"), attack_objective="logistic")
        d.fit(DataLoader(bench.train, batch_size=128), DataLoader(bench.aux, batch_size=128))
        return d

    dets = {"oe/msp": lambda: MSP(model("oe")), "oe/energy": lambda: Energy(model("oe")),
            "k+1/reject": lambda: RejectClass(model("ntom")),
            "k+1 3-bit quantized/reject": lambda: RejectClass(Quantize3Bit(model("ntom"))),
            "oe 3-bit quantized/msp": lambda: MSP(Quantize3Bit(model("oe"))),
            "oe/mahalanobis (logistic, eq. 116)": maha}
    checkpoints = None
    if args.checkpoints is not None:
        dets, checkpoints = _demo_detectors(args.checkpoints, bench, device)
    rows = []
    for name, mk in dets.items():
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            det = mk().eval()
        except Exception as err:  # noqa: BLE001 - report and go on
            rows.append({"detector": name, "error": f"{type(err).__name__}: {err}"})
            print(name, "skipped:", rows[-1]["error"], flush=True)
            continue
        r = evaluate_detector(name, det, x_id, x_ood, args)
        rows.append(r)
        if not args.quiet:
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "seconds"}, flush=True)
    res = {"benchmark": "autoattack",
           "settings": {"width": None if checkpoints else args.width, "epochs": None if checkpoints else args.epochs,
                        "n_id": x_id.shape[0], "n_ood": x_ood.shape[0],
                        "eps": args.eps, "version": args.version, "square_queries": args.square_queries,
                        "train_seconds": train_s, "checkpoints": checkpoints,
                        "pgd40": "OODPGD eps, alpha 2/255, 40 steps, random start"},
           "results": rows}
    path = C.write_json(args.out, res, info)
    if not args.quiet:
        print(C.machine_line(info))
        cols = ["detector", "fpr_natural", "fpr_pgd40", "fpr_apgd", "fpr_apgd-margin", "fpr_square", "fpr_auto",
                "auto_superset", "fpr_auto_not_pgd40", "zero_grad_fraction", "auto_forwards_vs_pgd40",
                "auto_passes_vs_pgd40", "fpr_square_alone",
                "square_vs_pgd40_increase", "square_beats_pgd40"]
        print(C.table([{c: r.get(c) for c in cols} for r in rows if "error" not in r], cols))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
