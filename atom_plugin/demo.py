"""The main job: train OE and ATOM on the embedded benchmark and compare their robustness.

:func:`run_demo` (``atom-ood demo``) trains two detectors from the same seed and the
same small CNN backbone on the embedded digits benchmark
(:func:`atom_plugin.data.load_default_benchmark`):

* **OE**: a K-way classifier trained with Outlier Exposure on random auxiliary outliers
  (MSP score);
* **ATOM**: a (K+1)-way classifier trained with informative outlier mining and PGD on
  half of each outlier batch (reject-class score).

Both are evaluated with :func:`atom_plugin.evaluation.evaluate` under the paper's four
OOD tasks (natural, corruption, L∞, compositional) at the paper's radius ``eps = 8/255``
(also the training radius), and the comparison table is printed and written with the
report folder.

The settings are scaled down so the whole run takes a few minutes on two CPU cores
(under five on the development machine, see the README): a narrow CNN, few epochs, 64
outliers per step, a reduced evaluation attack (20 PGD steps of 1/255 instead of 40) and
subset of corruptions (5 types x 3 severities), and 100 test images per OOD set.  On the
CPU the model gets channels-last inputs in training and evaluation (speed only: the same
protocol and float32 math; results agree with NCHW inputs up to rounding).  ``quick=True``
(:data:`QUICK`) is a seconds-long smoke version for tests; its numbers mean nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["DemoSettings", "DEMO", "QUICK", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo fixes (see the module docstring for why each is reduced).

    Training (both methods): ``width`` of :class:`~atom_plugin.models.SmallCNN`,
    ``epochs``, ``lr`` (SGD, Nesterov 0.9, wd 1e-4, x0.1 at 50/75/90%), ``batch_size``
    ID and ``outlier_batch_size`` outlier images per step, ``eps``/``train_steps``/
    ``train_alpha`` of the training PGD (ATOM, on half the outlier batch).
    Mining (ATOM): ``q``, ``pool_size`` (N), ``mined_size`` (n) and ``score_batch_size``
    (64 is faster than the GPU-sized default 512 on a CPU, see ``benchmarks/README.md``).
    Data: ``n_aux`` auxiliary outliers, ``eval_examples`` test images per OOD set
    (the whole ID test set, 504 digits, is always used).
    Evaluation: L∞ PGD ``eval_steps`` steps of ``eval_alpha`` at ``eps``;
    corruption search over ``corruptions`` x ``severities``; ``eval_batch_size`` images
    per batch (a speed setting only).
    """

    width: int = 16
    epochs: int = 14
    lr: float = 0.05
    batch_size: int = 64
    outlier_batch_size: int = 64
    eps: float = 8 / 255
    train_steps: int = 5
    train_alpha: float = 2 / 255
    q: float = 0.0
    pool_size: int = 2500
    mined_size: int = 1344
    score_batch_size: int = 64
    n_aux: int = 5000
    eval_examples: int = 100
    eval_steps: int = 20
    eval_alpha: float = 1 / 255
    corruptions: tuple[str, ...] = ("gaussian_noise", "defocus_blur", "contrast", "brightness", "pixelate")
    severities: tuple[int, ...] = (1, 3, 5)
    eval_batch_size: int = 128

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["corruptions"], d["severities"] = list(self.corruptions), list(self.severities)
        return d


#: the settings of ``atom-ood demo``
DEMO = DemoSettings()
#: ``atom-ood demo --quick``: a smoke test of the whole pipeline, seconds, meaningless numbers
QUICK = DemoSettings(width=4, epochs=1, lr=0.1, batch_size=64, outlier_batch_size=32, train_steps=1, pool_size=600,
                     mined_size=300, n_aux=600, eval_examples=16, eval_steps=2, eval_alpha=8 / 255,
                     corruptions=("gaussian_noise",), severities=(3,))

METHODS = ("oe", "atom")
TITLES = {"oe": "OE", "atom": "ATOM"}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _build_model(method: str, width: int, bench, seed: int):
    from .models import Normalize, SmallCNN, with_reject_head

    torch.manual_seed(seed)  # same backbone initialisation for both methods
    model = Normalize(SmallCNN(bench.num_classes, width=width), bench.mean, bench.std)
    if method in ("atom", "ntom"):
        model = with_reject_head(model, bench.num_classes)
    return model


def _train_config(method: str, s: DemoSettings, seed: int, progress: bool):
    from .training import TrainConfig

    return TrainConfig(method=method, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                       outlier_batch_size=s.outlier_batch_size, eps=s.eps, alpha=s.train_alpha,
                       steps=s.train_steps, q=s.q, pool_size=s.pool_size, mined_size=s.mined_size,
                       score_batch_size=s.score_batch_size, seed=seed, progress=progress, log_every=10)


def run_demo(out: str | os.PathLike = "atom_ood_demo", quick: bool = False, seed: int = 0, progress: bool = True,
             settings: DemoSettings | None = None, methods: Sequence[str] = METHODS,
             resume: bool = False) -> dict[str, Any]:
    """Train OE and ATOM on the embedded benchmark, evaluate both, write the report folder.

    Args:
        out: report folder (created).  Written: ``comparison.md`` / ``.json`` / ``.csv``
            (the table), ``summary.json`` (settings, runtime, headline numbers), per method
            ``<method>/`` with the evaluation report (``table.md``, ``report.json``,
            ``metrics.csv``, plots), ``train/last.pt`` and ``train/metrics.jsonl``; ATOM
            also ``mining.json`` and ``mining_histograms.png``.
        quick: use :data:`QUICK` (seconds; for tests) instead of :data:`DEMO`.
        seed: seeds the benchmark, the initialisation, the training and the evaluation.
        progress: progress bars and per-epoch lines.
        settings: override :data:`DEMO` / :data:`QUICK`.
        methods: which of ``"oe"``, ``"atom"`` (also ``"ntom"``, ``"acet"``, ``"aloe"``,
            ``"aoe"``) to train and compare.
        resume: reuse finished training runs found in ``out`` (checkpoints at the final epoch).

    Returns:
        the summary dict that is also written to ``summary.json``.
    """
    from .data import load_default_benchmark
    from .report import Report

    s = settings or (QUICK if quick else DEMO)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.time(), _cpu_seconds()
    bench = load_default_benchmark(seed=seed, n_aux=s.n_aux, n_ood_per_set=s.eval_examples)
    reports: dict[str, Report] = {}
    timing: dict[str, dict[str, float]] = {}
    histories: dict[str, list] = {}
    for method in methods:
        title = TITLES.get(method, method.upper())
        t0 = time.time()
        model, histories[method] = _train(method, title, s, bench, out, seed, progress, resume)
        t1 = time.time()
        reports[title] = _evaluate(model, title, s, bench, out / method, seed, progress)
        timing[method] = {"train_s": round(t1 - t0, 1), "eval_s": round(time.time() - t1, 1)}
    comp = Report.combine(reports)
    comp.save(out)
    wall, cpu = time.time() - t_start, _cpu_seconds() - c_start
    summary = _summary(s, quick, seed, methods, wall, cpu, timing, reports, histories, comp.table())
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    print("\nFPR = FPR at 95% TPR (in-distribution positive), mean over the OOD sets, percent;"
          f" eps = {s.eps * 255:.0f}/255; corruption severities: the {summary['corruption_table']!r} table.\n")
    print(summary["table"])
    print(f"\nreport folder: {out}  (wall {wall:.0f} s, CPU {cpu:.0f} s)")
    return summary


def _train(method: str, title: str, s: DemoSettings, bench, out: Path, seed: int, progress: bool, resume: bool):
    """Build the seeded backbone and train it; returns ``(model in eval mode, history)``."""
    from .mining import plot_score_histograms
    from .training import Trainer

    model = _build_model(method, s.width, bench, seed)
    if progress:
        print(f"== training {title} ({s.epochs} epochs, SmallCNN width {s.width}) ==", flush=True)
    trainer = Trainer(model, bench.train, bench.aux, _train_config(method, s, seed, progress),
                      out_dir=out / method / "train", resume=resume, overwrite=not resume)
    history = trainer.fit()
    if trainer.miner is not None and trainer.miner.history:
        plot_score_histograms(trainer.miner.history, out / method / "mining_histograms.png")
    return model.eval(), history


def _evaluate(model, title: str, s: DemoSettings, bench, out: Path, seed: int, progress: bool):
    """The four-task evaluation of one trained model, saved under ``out``.  On the CPU the
    model gets NHWC inputs (same protocol and math, ~1.3-1.8x faster forwards here, see
    :func:`atom_plugin.mining.channels_last_helps`); scores agree with NCHW to ~1e-7."""
    from .evaluation import evaluate
    from .mining import channels_last_helps
    from .training.trainer import channels_last_inputs

    if progress:
        print(f"== evaluating {title} ==", flush=True)
    with channels_last_inputs(model, channels_last_helps(model, "cpu") and _on_cpu(model)):
        rep = evaluate(model, bench.test, bench.ood, eps=s.eps, alpha=s.eval_alpha, steps=s.eval_steps,
                       corruptions=list(s.corruptions), severities=list(s.severities), seed=seed,
                       progress=progress, name=title, batch_size=s.eval_batch_size)
    rep.save(out)
    return rep


def _on_cpu(model) -> bool:
    from ._utils import module_device

    return module_device(model).type == "cpu"


def _summary(s: DemoSettings, quick: bool, seed: int, methods: Sequence[str], wall: float, cpu: float,
             timing: dict, reports: dict, histories: dict, table: str) -> dict[str, Any]:
    """``summary.json``: settings, runtime, per-method headline numbers, the OE-vs-ATOM check."""
    summary: dict[str, Any] = {
        "settings": s.to_dict(), "quick": bool(quick), "seed": seed, "methods": list(methods),
        "runtime_s": round(wall, 1), "cpu_s": round(cpu, 1), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "timing": timing, "results": {}, "table": table,
        # the corruption severity constants the corruption searches used (auto: CIFAR-10-C's at 32 px)
        "corruption_table": next((r.config.get("corruption_table") for r in reports.values()
                                  if r.config.get("corruption_table")), None),
    }
    for title, rep in reports.items():
        res = {task: {"fpr": rep.get("mean", task, "fpr"), "auroc": rep.get("mean", task, "auroc")}
               for task in rep.tasks}
        res["accuracy"] = rep.id_metrics.get("accuracy")
        res["final_train"] = {k: v for k, v in histories[_method_of(title)][-1].items()
                              if isinstance(v, (int, float))}
        summary["results"][title] = res
    if "OE" in reports and "ATOM" in reports:
        r = summary["results"]
        summary["check"] = {
            "atom_linf_fpr_below_oe": r["ATOM"]["linf"]["fpr"] < r["OE"]["linf"]["fpr"],
            "atom_comp_fpr_below_oe": r["ATOM"]["compositional"]["fpr"] < r["OE"]["compositional"]["fpr"],
            "natural_fpr_gap": r["ATOM"]["natural"]["fpr"] - r["OE"]["natural"]["fpr"],
        }
    return summary


def _method_of(title: str) -> str:
    """``"ATOM"`` -> ``"atom"`` (inverse of :data:`TITLES`)."""
    for k, v in TITLES.items():
        if v == title:
            return k
    return title.lower()
