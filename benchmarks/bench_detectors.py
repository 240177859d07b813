"""Every detector, natural and attacked, on the embedded benchmark.

One small model (``SmallCNN`` width 16, outlier exposure, a few epochs on the embedded
digits benchmark) and, for **every own registered detector** (K-way heads) and **every
pytorch-ood 0.4.0 detector class** (through :func:`atom_plugin.detectors.from_pytorch_ood`):

* natural FPR at 95% TPR (the paper's, ID positive) and AUROC, ID test images vs OOD images
  (an equal share of every embedded OOD set);
* attacked FPR / AUROC: the OOD images attacked at L-inf eps 8/255 to look ID, with
  OODPGD (``--pgd-steps`` steps, step 2/255, one restart, seeded) on white-box detectors and
  OODSquare (``--square-queries`` score queries, seeded) on black-box ones, if
  ``atom_plugin.attacks`` registers a score-only attack (checked at run time); else the
  attacked columns are left empty for them;
* the attack used, its cost (forwards+backwards or queries per image) and seconds (fit,
  natural scoring, attack).

Run: ``python benchmarks/bench_detectors.py [--quick] [--threads 2]``; JSON to
``benchmarks/results/detectors.json``.  Timings are wall-clock on whatever the machine is
doing (the JSON records the load average before and after).
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import _common  # noqa: E402
import atom_plugin  # noqa: E402,F401  (before pytorch_ood)


def _train_model(bench, width: int, epochs: int, seed: int, device):
    from atom_plugin.models import Normalize, SmallCNN
    from atom_plugin.training import train

    torch.manual_seed(seed)
    model = Normalize(SmallCNN(bench.num_classes, width=width), bench.mean, bench.std)
    return train(model, bench.train, bench.aux, method="oe", epochs=epochs, lr=0.1, batch_size=64,
                 outlier_batch_size=64, seed=seed, progress=False, device=device).to(device).eval()


def _images(ds, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return torch.stack([ds[i][0] for i in idx])


def _scores(det, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    out = []
    for s in range(0, x.shape[0], batch):
        xb = x[s: s + batch]
        if getattr(det, "needs_input_grad", False):
            out.append(det.score(xb).detach())
        else:
            with torch.no_grad():
                out.append(det.score(xb))
    return torch.cat(out).cpu()


def _detectors(model, fit_loader, k: int):
    """``(name, family, builder)`` for every own detector and every pytorch-ood class."""
    from atom_plugin.detectors import create_detector, detector_info, from_pytorch_ood, list_detectors
    from atom_plugin.detectors import pytorch_ood_detector
    from atom_plugin.detectors.adapters import PYTORCH_OOD_CLASSES

    own = [n for n in list_detectors() if detector_info(n).head == "any" and n != "auto"]
    for n in own:
        yield n, "own", (lambda n=n: create_detector(n, model, fit_loader=fit_loader))
    kw = {"MCD": {"samples": 10}}
    for n in PYTORCH_OOD_CLASSES:
        yield n, "pytorch-ood", (lambda n=n: from_pytorch_ood(pytorch_ood_detector(n, model, **kw.get(n, {})),
                                                            model, fit_loader))


def _attack_row(row: dict, det, atk, label: str, si: torch.Tensor, x_ood: torch.Tensor) -> None:
    """Attack ``x_ood`` (batches of 100) and add the attacked FPR / AUROC to ``row``."""
    from atom_plugin.metrics import auroc, fpr_at_tpr

    row["attack"], row["n_attacked"] = label, int(x_ood.shape[0])
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = torch.cat([atk(x_ood[s: s + 100]) for s in range(0, x_ood.shape[0], 100)])
    row["attack_s"] = time.perf_counter() - t
    assert float((adv - x_ood).abs().max()) <= 8 / 255 + 1e-6
    sa = _scores(det, adv)
    row["fpr_adv"], row["auroc_adv"] = fpr_at_tpr(si.numpy(), sa.numpy()), auroc(si.numpy(), sa.numpy())


def _record(row: dict, rows: list, args, payload: dict, machine: dict) -> None:
    rows.append(row)
    _common.write_json(args.out, {**payload, "rows": rows, "complete": False}, machine)  # partial results
    print(f"{row['detector']:18s} {row['mode']:9s} FPR {row['fpr']:.3f} -> {row.get('fpr_adv', float('nan')):.3f}  "
          f"AUROC {row['auroc']:.3f} -> {row.get('auroc_adv', float('nan')):.3f}  {row['attack']}  "
          f"fit {row['fit_s']:.1f}s score {row['score_s']:.1f}s attack {row.get('attack_s', 0):.1f}s", flush=True)


def main() -> None:
    p = _common.parser(__doc__.split("\n\n")[0], "detectors.json")
    p.add_argument("--quick", action="store_true", help="small model, 1 epoch, 64+64 images, few steps")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-id", type=int, default=200, help="ID test images")
    p.add_argument("--n-ood", type=int, default=200, help="OOD images (split evenly over the OOD sets)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--square-queries", type=int, default=100)
    p.add_argument("--only", nargs="*", default=None, help="detector names to run (default: all)")
    p.add_argument("--blackbox-ood", type=int, default=None,
                   help="attack only the first N OOD images with the black-box attack (CPU budget; default all)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --out (same settings) and run only the missing detectors")
    p.add_argument("--model-cache", default=None,
                   help="state_dict file: load the trained model from it if it exists, else train and save it")
    args = p.parse_args()
    if args.quick:
        args.width, args.epochs, args.n_id, args.n_ood, args.pgd_steps, args.square_queries = 4, 1, 64, 64, 3, 20
    device = _common.setup(args)
    machine = _common.machine_info(device)

    from atom_plugin.attacks import OODPGD, list_attacks
    from atom_plugin.data import load_default_benchmark
    from atom_plugin.metrics import auroc, fpr_at_tpr

    square_available = "square" in list_attacks(gradient=False)
    bench = load_default_benchmark(seed=args.seed)
    t0 = time.perf_counter()
    if args.model_cache and Path(args.model_cache).exists():
        from atom_plugin.models import Normalize, SmallCNN

        model = Normalize(SmallCNN(bench.num_classes, width=args.width), bench.mean, bench.std)
        model.load_state_dict(torch.load(args.model_cache, map_location="cpu", weights_only=True))
        model = model.to(device).eval()
    else:
        model = _train_model(bench, args.width, args.epochs, args.seed, device)
        if args.model_cache:
            torch.save(model.state_dict(), args.model_cache)
    train_s = time.perf_counter() - t0
    fit_loader = DataLoader(bench.train, batch_size=128, shuffle=False)
    x_id = _images(bench.test, args.n_id, args.seed).to(device)
    per_set = max(1, args.n_ood // len(bench.ood))
    x_ood = torch.cat([_images(ds, per_set, args.seed + i) for i, ds in enumerate(bench.ood.values())]).to(device)
    with torch.no_grad():
        acc = float((model(x_id).argmax(1).cpu() == torch.tensor(
            [bench.test[i][1] for i in torch.randperm(len(bench.test), generator=torch.Generator().manual_seed(
                args.seed))[: args.n_id].tolist()])).float().mean())
    print(f"model: SmallCNN width {args.width}, OE {args.epochs} epochs ({train_s:.0f} s), ID test accuracy "
          f"{acc:.3f}; {x_id.shape[0]} ID / {x_ood.shape[0]} OOD images; black-box attack available: "
          f"{square_available}", flush=True)

    payload = {"settings": vars(args), "model": {"width": args.width, "epochs": args.epochs, "train_s": train_s,
                                                  "id_accuracy": acc},
               "n_id": int(x_id.shape[0]), "n_ood": int(x_ood.shape[0]), "square_available": square_available}
    rows, done = [], set()
    if args.resume and Path(args.out).exists():
        import json

        rows = [r for r in json.loads(Path(args.out).read_text())["rows"]]
        done = {(r["family"], r["detector"]) for r in rows}
    deferred = []  # black-box detectors run after every white-box one (their attacks cost the most)
    for name, family, build in _detectors(model, fit_loader, bench.num_classes):
        if (args.only and name not in args.only) or (family, name) in done:
            continue
        row = {"detector": name, "family": family}
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det = build()
        except ValueError as e:
            row.update(mode="refused", reason=str(e))
            rows.append(row)
            _common.write_json(args.out, {**payload, "rows": rows, "complete": False}, machine)
            print(f"{name:18s} refused: {e}", flush=True)
            continue
        row["fit_s"] = time.perf_counter() - t
        white = bool(getattr(det, "differentiable", True))
        row["mode"] = "white-box" if white else "black-box"
        t = time.perf_counter()
        si, so = _scores(det, x_id), _scores(det, x_ood)
        row["score_s"] = time.perf_counter() - t
        row["fpr"], row["auroc"] = fpr_at_tpr(si.numpy(), so.numpy()), auroc(si.numpy(), so.numpy())
        if white:
            _attack_row(row, det, OODPGD(det, eps=8 / 255, alpha=2 / 255, steps=args.pgd_steps, seed=args.seed),
                        f"OODPGD-{args.pgd_steps}", si, x_ood)
            _record(row, rows, args, payload, machine)
        else:
            deferred.append((row, det, si, so))
    for row, det, si, so in deferred:
        if square_available:
            from atom_plugin.attacks import OODSquare

            n = x_ood.shape[0] if args.blackbox_ood is None else min(args.blackbox_ood, x_ood.shape[0])
            sub = torch.linspace(0, x_ood.shape[0] - 1, n).round().long()  # every OOD set equally
            if n < x_ood.shape[0]:  # natural metrics on the attacked subset too, for a like-for-like change
                row["fpr_subset"] = fpr_at_tpr(si.numpy(), so[sub].numpy())
                row["auroc_subset"] = auroc(si.numpy(), so[sub].numpy())
            atk = OODSquare(det, eps=8 / 255, n_queries=args.square_queries, seed=args.seed)
            _attack_row(row, det, atk, f"OODSquare-{args.square_queries}", si, x_ood[sub.to(x_ood.device)])
        else:
            row["attack"] = "none (no black-box attack registered)"
        _record(row, rows, args, payload, machine)

    cols = ["detector", "family", "mode", "fpr", "fpr_adv", "auroc", "auroc_adv", "attack", "fit_s", "score_s",
            "attack_s"]
    if not args.quiet:
        print(_common.table([r for r in rows if r["mode"] != "refused"], cols, floatfmt=".3f"))
    path = _common.write_json(args.out, {**payload, "rows": rows, "complete": True}, machine)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
