"""``evaluate``: the robust OOD evaluation as a few named steps.

1. :func:`_prepare` — config, detector, device;
2. :meth:`_Run.score_id` — natural ID scores (+ attacked ID), accuracies, the threshold;
3. :meth:`_Run.score_ood_set` — every task's attack on one OOD set, scores, metrics;
4. :meth:`_Run.report` — the :class:`~atom_plugin.report.Report`.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Mapping

import numpy as np
import torch
import torch.nn as nn

from .. import distributed as D
from .._utils import eval_mode, module_device, progress
from .._validation import check_dataset, check_images
from ..metrics import ood_metrics, threshold_at_tpr
from ..report import Report
from .batches import num_batches, owned_batches
from .config import EvalConfig
from .scoring import Scorer, attack_scores, batch_seed, run_attack, to_uint8
from .tasks import build_attack, linf_attack_name

__all__ = ["evaluate"]

AttackFn = Callable[[torch.Tensor], torch.Tensor]
#: OOD images per set on which ``EvalConfig(diagnostics=True)`` runs the gradient-masking checks
DIAGNOSTIC_IMAGES = 64


def evaluate(detector: nn.Module, id_data: Any, ood_sets: Mapping[str, Any], config: EvalConfig | None = None, *,
             attacks: Mapping[str, AttackFn] | None = None, **overrides: Any) -> Report:
    """Evaluate ``detector`` on natural and attacked OOD sets (see :mod:`atom_plugin.evaluation`).

    Args:
        detector: a :class:`~atom_plugin.detectors.Detector` (or a classifier, turned into
            one by :func:`atom_plugin.detectors.as_detector`).  Fit it first if it needs it.
        id_data: in-distribution test data, a Dataset or DataLoader of ``(x, y)``; images
            ``(C, H, W)`` float in [0, 1]; labels in ``[0, K)`` give the accuracies.
        ood_sets: ``{name: Dataset or DataLoader}``; labels are ignored.
        config: an :class:`EvalConfig` (default: the paper's protocol).
        attacks: ``{task: callable images -> images}`` replacing the built-in attack of a task.
        **overrides: :class:`EvalConfig` fields (``tasks=..., eps=..., steps=...``), and the
            legacy ``corruption_kwargs={...}``.

    Returns:
        a :class:`~atom_plugin.report.Report` (identical on every rank).
    """
    cfg = EvalConfig.build(config, **overrides)
    det, device = _prepare(detector, cfg, id_data, ood_sets)
    run = _Run(det, cfg, device, attacks)
    with eval_mode(det):
        run.score_id(id_data)
        for set_name, data in ood_sets.items():
            run.score_ood_set(set_name, data)
    return run.report(ood_sets)


def _prepare(detector: Any, cfg: EvalConfig, id_data: Any, ood_sets: Any):
    from ..detectors import Detector, as_detector

    if not isinstance(detector, Detector):
        detector = as_detector(detector)
    detector.check_ready()
    check_dataset(id_data, "id_data")
    if not isinstance(ood_sets, Mapping) or not ood_sets:
        raise ValueError("`ood_sets` must be a non-empty dict {name: Dataset or DataLoader}.")
    for k, v in ood_sets.items():
        if not isinstance(k, str) or not k or k == "mean":
            raise ValueError(f"`ood_sets` keys must be non-empty set names other than 'mean', got {k!r}.")
        check_dataset(v, f"ood_sets[{k!r}]")
    if cfg.device is not None:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"`device` {cfg.device!r}: CUDA is not available on this machine; use device='cpu'.")
        detector.to(device)
    else:
        device = module_device(detector)
    return detector, device


class _Run:
    """The state of one evaluation: attacks, threshold, per-set results."""

    def __init__(self, det, cfg: EvalConfig, device: torch.device, custom: Mapping[str, AttackFn] | None) -> None:
        self.det, self.cfg, self.device = det, cfg, device
        self.custom = dict(custom or {})
        wanted = set(cfg.tasks) | ({"in"} if cfg.attack_id else set())
        extra = sorted(set(self.custom) - wanted)
        if extra:
            raise ValueError(f"`attacks` has entries for tasks not being run: {extra}; add them to `tasks` "
                             "(or set attack_id=True for 'in').")
        self.scorer = Scorer(det)
        self.show = cfg.progress and D.is_main_process()
        self.atks: Dict[str, Any] = {}
        self.metrics: dict = {}
        self.ood_scores: dict = {}
        self.wins: dict = {}
        self.examples: dict = {}
        self.costs: dict = {}
        self.warnings: list[str] = []
        self.diagnostics: dict = {}

    # ------------------------------------------------------------------ helpers
    def _attack(self, task: str, threshold: float | None):
        if task not in self.atks:
            self.atks[task] = self.custom[task] if task in self.custom else build_attack(
                task, self.det, self.cfg, threshold)
        return self.atks[task]

    def _batches(self, data, name: str):
        c = self.cfg
        it = owned_batches(data, name, c.batch_size, c.max_examples_per_set, c.num_workers)
        return progress(it, self.show, name, num_batches(data, c.batch_size, c.max_examples_per_set))

    def _check_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None:
            return None
        k = self.det.num_classes
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"`id_data` labels must be integer class indices of shape (B,), got dtype {y.dtype} "
                             f"shape {tuple(y.shape)}; convert one-hot labels with y.argmax(1).")
        if k is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(f"`id_data` labels must be in [0, {k}) (the detector's K = {k}), got values in "
                             f"[{int(y.min())}, {int(y.max())}]; pass a dataset of ID images with their class labels.")
        return y

    def _share_corruption_search(self, atks: dict) -> bool:
        """When both corruption tasks use the built-in attacks (built from the same config,
        so the same candidates), the compositional attack starts from the corruption task's
        search (same draws) instead of running it again: its corrupted centres are the
        corruption task's winners, and its win histogram is theirs."""
        from ..attacks import CompositionalAttack, CorruptionAttack

        corr, comp = atks.get("corruption"), atks.get("compositional")
        if not (isinstance(corr, CorruptionAttack) and isinstance(comp, CompositionalAttack)) or \
                {"corruption", "compositional"} & set(self.custom):
            return False
        return corr.top_k >= comp.top_k and tuple(corr.candidates) == tuple(comp.corruption_attack.candidates)

    # ------------------------------------------------------------------ step 2: ID
    def score_id(self, id_data: Any) -> None:
        cfg, local, kept = self.cfg, [], 0
        in_atk = self._attack("in", None) if cfg.attack_id else None
        for b, x, y in self._batches(id_data, "id_data"):
            x = check_images(x.to(self.device), "id_data images")
            y = self._check_labels(y)
            pay: dict[str, Any] = {"score": self.scorer.score_np(x)}
            logits = self.scorer.classify(x) if y is not None else None
            if logits is not None:
                pay["correct"] = (logits.argmax(1).cpu() == y.cpu()).numpy()
            if in_atk is not None:
                xa = run_attack(in_atk, x, batch_seed(cfg.seed, "__id__", "in", b))
                pay["score_in"] = self.scorer.score_np(xa)
                if logits is not None:
                    pay["correct_in"] = (self.scorer.classify(xa).argmax(1).cpu() == y.cpu()).numpy()
                if kept < cfg.keep_examples:
                    pay["ex_in"] = to_uint8(xa[: cfg.keep_examples - kept])
            if kept < cfg.keep_examples:
                pay["ex_natural"] = to_uint8(x[: cfg.keep_examples - kept])
                kept += min(x.shape[0], cfg.keep_examples - kept)
            local.append((b, pay))
        self._finish_id(_merge(local))

    def _finish_id(self, parts: list[dict]) -> None:
        cfg = self.cfg
        s = _cat(parts, "score")
        if s is None:
            raise ValueError("`id_data` yielded no images.")
        thr = threshold_at_tpr(s, cfg.tpr)
        self.id_scores, self.threshold = s, thr
        self.id_in = _cat(parts, "score_in") if cfg.attack_id else None
        m: dict[str, Any] = {"n_id": int(s.size), "threshold": thr, "tpr": float(np.mean(s <= thr)),
                             "fnr": float(np.mean(s > thr))}
        correct = _cat(parts, "correct")
        if correct is not None and correct.size == s.size:
            m["accuracy"] = float(np.mean(correct))
            m["e2e_accuracy"] = float(np.mean(correct & (s <= thr)))
        if self.id_in is not None:
            m["tpr_in"] = float(np.mean(self.id_in <= thr))
            ci = _cat(parts, "correct_in")
            if ci is not None and ci.size == self.id_in.size:
                m["accuracy_in"] = float(np.mean(ci))
                m["e2e_accuracy_in"] = float(np.mean(ci & (self.id_in <= thr)))
        self.id_metrics = m
        ex = {"natural": _examples(parts, "ex_natural", cfg.keep_examples)}
        if cfg.attack_id:
            ex["in"] = _examples(parts, "ex_in", cfg.keep_examples)
        self.examples["__id__"] = {k: v for k, v in ex.items() if v is not None}

    # ------------------------------------------------------------------ step 3: one OOD set
    def score_ood_set(self, set_name: str, data: Any) -> None:
        cfg, local, kept = self.cfg, [], 0
        atks = {t: self._attack(t, self.threshold) for t in cfg.tasks}
        shared = self._share_corruption_search(atks)
        order = sorted(cfg.tasks, key=lambda t: t == "compositional")  # the corruption search first
        diag_x: list[torch.Tensor] = []
        for b, x, _ in self._batches(data, set_name):
            x = check_images(x.to(self.device), f"ood_sets[{set_name!r}] images")
            pay: dict[str, Any] = {}
            for task in order:
                kw = {"corruption_result": atks["corruption"].last_topk} if shared and task == "compositional" else {}
                xa = run_attack(atks[task], x, batch_seed(cfg.seed, set_name, task, b), **kw)
                s = attack_scores(atks[task], x)
                pay[task] = s.cpu().numpy().astype(np.float64) if s is not None else self.scorer.score_np(xa)
                pay["cost_" + task] = _cost_of(atks[task])
                if kept < cfg.keep_examples:
                    pay["ex_" + task] = to_uint8(xa[: cfg.keep_examples - kept])
            kept += min(x.shape[0], max(cfg.keep_examples - kept, 0))
            local.append((b, pay))
            if cfg.diagnostics and len(diag_x) < DIAGNOSTIC_IMAGES:
                diag_x.extend(x[: DIAGNOSTIC_IMAGES - len(diag_x)])
        if cfg.diagnostics:
            self._diagnose(set_name, diag_x)
        parts = _merge(local)
        scores, ex = {}, {}
        for task in cfg.tasks:
            s = _cat(parts, task)
            if s is None:
                raise ValueError(f"`ood_sets[{set_name!r}]` yielded no images.")
            scores[task] = s
            e = _examples(parts, "ex_" + task, cfg.keep_examples)
            if e is not None:
                ex[task] = e
        self.ood_scores[set_name], self.examples[set_name] = scores, ex
        self.metrics[set_name] = _set_metrics(self.id_scores, self.id_in, scores, self.threshold, cfg.tpr)
        self.costs[set_name] = {t: _sum_costs(p.get("cost_" + t) for p in parts) for t in cfg.tasks if atks[t]}
        nat = self.metrics[set_name].get("natural")
        if nat is not None and nat["auroc"] < 0.5:
            msg = (f"natural AUROC on {set_name!r} is {100 * nat['auroc']:.1f}% < 50%: the detector ranks this OOD set "
                   "as more in-distribution than the ID data; if its score is a confidence (higher = more ID), "
                   "flip it (ScoreDetector(..., higher_is_ood=False)).")
            warnings.warn(msg, stacklevel=3)
            self.warnings.append(msg)
        for task in ("corruption", "compositional"):
            h = _take_histogram(atks.get(task))
            if h is not None:
                self.wins.setdefault(set_name, {})[task] = h

    def _diagnose(self, set_name: str, images: list) -> None:
        """The gradient-masking checks on the first images of the set (rank 0; shared)."""
        from ..attacks.diagnostics import masking_diagnostics

        out = None
        if D.get_rank() == 0 and images:
            cfg = self.cfg
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                out = masking_diagnostics(self.det, torch.stack(images), self.threshold, cfg.eps,
                                          steps=min(cfg.steps, 10), n_queries=min(cfg.queries, 300), seed=cfg.seed)
        out = next((d for d in D.all_gather_object(out) if d is not None), None)
        if out is None:
            return
        self.diagnostics[set_name] = out
        for w in out.get("warnings", []):
            msg = f"gradient masking? {set_name}: {w}"
            warnings.warn(msg, stacklevel=3)
            self.warnings.append(msg)

    # ------------------------------------------------------------------ step 4: report
    def report(self, ood_sets: Mapping[str, Any]) -> Report:
        cfg = self.cfg
        scores = {"id": {"natural": self.id_scores}, "ood": self.ood_scores}
        if self.id_in is not None:
            scores["id"]["in"] = self.id_in
        attacks = {k: (type(v).__name__ if v is not None else None) for k, v in self.atks.items()}
        config = {
            "detector": type(self.det).__name__, "tasks": list(cfg.tasks), "attack_id": cfg.attack_id,
            "eps": cfg.eps, "alpha": cfg.alpha, "steps": cfg.steps, "restarts": cfg.restarts,
            "tpr_level": cfg.tpr, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "max_examples_per_set": cfg.max_examples_per_set, "world_size": D.get_world_size(),
            "ood_sets": list(ood_sets), "attacks": attacks, "eval_config": cfg.to_dict(),
            "differentiable": bool(getattr(self.det, "differentiable", True)),
        }
        if any(t in cfg.tasks for t in ("linf", "compositional")) or cfg.attack_id:
            config["linf_attack_used"] = linf_attack_name(self.det, cfg)
        tables = {t: getattr(getattr(a, "corruption_attack", a), "resolved_table", None) for t, a in self.atks.items()
                  if t in ("corruption", "compositional") and a is not None}
        if any(tables.values()):
            config["corruption_table"] = next(v for v in tables.values() if v)  # the table the search used
        if config.get("linf_attack_used") == "auto" and not cfg.early_stop:
            config.setdefault("notes", []).append(
                "OOD AutoAttack attacks only images not yet accepted at the threshold: FPR is worst-case, "
                "AUROC/AUPR under it are not")
        if cfg.early_stop:
            config["early_stop"] = True
            config.setdefault("notes", []).append(
                "early stopping was on: FPR is worst-case, AUROC/AUPR under attack are not")
        if any(self.costs.values()):
            config["attack_cost"] = self.costs  # {set: {task: {"forwards"/"backwards"/"queries": total}}}
        if self.diagnostics:
            config["diagnostics"] = self.diagnostics  # {set: masking_diagnostics(...) numbers and checks}
        if self.warnings:
            config["warnings"] = list(self.warnings)
        if self.wins:
            config["corruption_wins"] = self.wins  # {set: {task: {corruption or "clean": images won}}}
        return Report(metrics=self.metrics, id_metrics=self.id_metrics, scores=scores, examples=self.examples,
                      config=config, name=cfg.name)


# ------------------------------------------------------------------ small pure helpers
def _cost_of(atk: Any) -> dict | None:
    """What the attack's last call spent (``last_cost``: forwards / backwards / queries), if it says."""
    cost = getattr(atk, "last_cost", None) if atk is not None else None
    return {k: int(v) for k, v in cost.items() if isinstance(v, (int, float))} if isinstance(cost, dict) else None


def _sum_costs(costs) -> dict:
    total: dict[str, int] = {}
    for c in costs:
        for k, v in (c or {}).items():
            total[k] = total.get(k, 0) + v
    return total  # the payloads were gathered from every rank already


def _take_histogram(atk: Any) -> dict | None:
    """The corruption win histogram of ``atk`` since the last call (summed over ranks)."""
    if atk is None or not hasattr(atk, "win_histogram"):
        return None
    h = dict(atk.win_histogram())
    ca = getattr(atk, "corruption_attack", atk)
    if hasattr(ca, "reset_histogram"):
        ca.reset_histogram()
    total: dict[str, int] = {}
    for part in D.all_gather_object(h):
        for k, v in part.items():
            total[k] = total.get(k, 0) + int(v)
    return {k: v for k, v in sorted(total.items(), key=lambda kv: -kv[1]) if v}


def _merge(local: list[tuple[int, dict]]) -> list[dict]:
    """Gather ``(batch_index, payload)`` lists from every rank, sorted by batch index."""
    allp = [p for part in D.all_gather_object(local) for p in part]
    allp.sort(key=lambda t: t[0])
    return [p for _, p in allp]


def _cat(parts: list[dict], key: str) -> np.ndarray | None:
    vals = [p[key] for p in parts if p.get(key) is not None]
    return np.concatenate(vals) if vals else None


def _examples(parts: list[dict], key: str, keep: int) -> np.ndarray | None:
    vals = [p[key] for p in parts if p.get(key) is not None]
    return np.concatenate(vals)[:keep] if vals else None


def _set_metrics(id_nat: np.ndarray, id_in: np.ndarray | None, ood: Dict[str, np.ndarray],
                 thr: float, tpr: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task, s in ood.items():
        out[task] = _metrics_at(id_nat, s, thr, tpr)
    if id_in is not None:
        for task, s in {"in": ood.get("natural"), "in_out": ood.get("linf")}.items():
            if s is not None:
                out[task] = _metrics_at(id_in, s, thr, tpr)
    return out


def _metrics_at(id_s: np.ndarray, ood_s: np.ndarray, thr: float, tpr: float) -> dict[str, float]:
    m = ood_metrics(id_s, ood_s, tpr)
    m["fpr_at_threshold"] = float(np.mean(ood_s <= thr))
    m["tpr_at_threshold"] = float(np.mean(id_s <= thr))
    return m
