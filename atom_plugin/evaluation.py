"""The unified robust OOD evaluation of the ATOM paper (Section 5.1, Tables 1 and 12).

Protocol (what :func:`evaluate` measures)
-----------------------------------------
* **ID scores and threshold.**  The detector scores the natural in-distribution test
  set; the acceptance threshold ``t`` keeps ``tpr`` (95%) of it
  (:func:`atom_plugin.metrics.threshold_at_tpr`; accept iff ``score <= t``).  ``t`` is
  chosen **once** and reused for every task.
* **OOD tasks**, each applied to every OOD set:
  ``natural`` (clean images), ``corruption`` (black-box corruption attack,
  :class:`atom_plugin.attacks.CorruptionAttack`), ``linf`` (white-box L∞ PGD,
  :class:`atom_plugin.attacks.OODPGD`, eps/alpha/steps/restarts), ``compositional``
  (corruption then L∞, :class:`atom_plugin.attacks.CompositionalAttack`).  For each
  (set, task): :func:`atom_plugin.metrics.ood_metrics` of (natural ID scores, task OOD
  scores): FPR at 95% TPR (ID positive; equal to the fraction of attacked OOD inputs
  accepted at ``t``), AUROC, AUPR-in, AUPR-out, detection error, and the OOD-positive
  FPR95 (reported separately, never as "fpr").  ``"mean"`` averages each metric over the
  OOD sets (the paper's tables average six sets).
* **Attacked ID** (``attack_id=True``): ID inputs pushed to look OOD (``OODPGD`` with
  ``target="in"``, ALOE's "In" attack).  Task ``in``: attacked ID vs natural OOD; task
  ``in_out``: attacked ID vs L∞-attacked OOD (needs ``"linf"`` in ``tasks``).  For these
  tasks the threshold-free metrics (AUROC, AUPR) and ``fpr`` use the attacked ID scores
  (``fpr`` re-thresholds at 95% TPR of the *attacked* ID scores, as ALOE reports), and
  ``tpr_at_threshold`` / ``fpr_at_threshold`` give the fractions of attacked ID / OOD
  inputs accepted at the natural threshold ``t``.
* **ID classification**: ``accuracy`` = argmax over the K class logits equals the label;
  ``e2e_accuracy`` (Table 12) = the detector accepts the image at ``t`` AND the classifier
  is right; ``fnr`` = fraction of ID rejected at ``t`` (about 5%).  With
  ``attack_id=True`` also ``e2e_accuracy_in`` on the attacked ID images.

Data are ``Dataset``s or ``DataLoader``s yielding ``(x, y)`` or bare ``x`` (OOD labels are
ignored).  Batches are streamed; only scores (and ``keep_examples`` images per set and
task, for the figure) are kept.  Randomness (random starts, random corruptions) is seeded
per (seed, set, task, batch index), so results are reproducible and do not depend on the
number of processes.

Multi-process: under ``torchrun`` (after :func:`atom_plugin.distributed.init_from_env`),
each rank takes a contiguous block of batches of each set, scores are gathered, and every
rank returns the same :class:`~atom_plugin.report.Report` (write it on rank 0 only).
"""
from __future__ import annotations

import math
import random
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from . import distributed as D
from .attacks import OODPGD, CompositionalAttack, CorruptionAttack
from ._validation import check_choice, check_float, check_images, check_int
from .metrics import ood_metrics, threshold_at_tpr
from .report import Report

__all__ = ["evaluate", "TASKS", "ALL_TASKS"]

#: the paper's four OOD tasks (Table 1 column groups)
TASKS = ("natural", "corruption", "linf", "compositional")
#: with the attacked-ID tasks
ALL_TASKS = TASKS + ("in", "in_out")

AttackFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- data
def _is_map_dataset(ds: Any) -> bool:
    return isinstance(ds, Dataset) and hasattr(ds, "__len__") and hasattr(ds, "__getitem__")


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    raise TypeError(
        f"data must yield image tensors or (images, labels) batches, got {type(batch).__name__}; "
        "wrap your data in a Dataset returning (image (C,H,W) in [0,1], int label)."
    )


def _owned_batches(data: Any, name: str, batch_size: int, max_examples: int | None,
                   num_workers: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(global_batch_index, x, y)`` for the batches this rank owns.

    Global batches are ``[b*bs, (b+1)*bs)`` of the (truncated) data; ranks own contiguous
    blocks of batches (:func:`atom_plugin.distributed.shard_indices` over batch indices),
    so a batch is the same whatever the number of processes.
    """
    rank, world = D.get_rank(), D.get_world_size()
    ds, bs, kw = None, batch_size, {"num_workers": num_workers}
    if isinstance(data, DataLoader):
        if _is_map_dataset(data.dataset) and isinstance(data.sampler, SequentialSampler) and data.batch_size:
            ds, bs = data.dataset, data.batch_size
            kw = {"num_workers": data.num_workers, "collate_fn": data.collate_fn, "pin_memory": data.pin_memory}
    elif _is_map_dataset(data):
        ds = data
    elif not hasattr(data, "__iter__"):
        raise TypeError(f"`{name}` must be a Dataset or a DataLoader, got {type(data).__name__}.")
    if ds is not None:
        n = len(ds) if max_examples is None else min(len(ds), max_examples)
        if n == 0:
            raise ValueError(f"`{name}` is empty; every set needs at least one image.")
        n_batches = math.ceil(n / bs)
        mine = D.shard_indices(n_batches, rank, world)
        if not mine:
            return
        lo, hi = mine[0] * bs, min(n, (mine[-1] + 1) * bs)
        loader = DataLoader(Subset(ds, range(lo, hi)), batch_size=bs, shuffle=False,
                            generator=torch.Generator().manual_seed(lo), **kw)  # global RNG untouched
        for i, batch in enumerate(loader):
            x, y = _split_batch(batch)
            yield mine[0] + i, x, y
        return
    # generic iterable / shuffled loader: every rank iterates, rank r takes batches b % W == r
    seen = 0
    for b, batch in enumerate(data):
        x, y = _split_batch(batch)
        if max_examples is not None:
            if seen >= max_examples:
                break
            keep = min(x.shape[0], max_examples - seen)
            x, y = x[:keep], (y[:keep] if y is not None else None)
        seen += x.shape[0]
        if b % world == rank:
            yield b, x, y
    if seen == 0:
        raise ValueError(f"`{name}` is empty; every set needs at least one image.")


def _num_batches(data: Any, batch_size: int, max_examples: int | None) -> int | None:
    try:
        if isinstance(data, DataLoader):
            n = len(data.dataset) if max_examples is not None else None
            if n is None:
                return math.ceil(len(data) / max(D.get_world_size(), 1))
            return math.ceil(min(n, max_examples) / (data.batch_size or 1) / D.get_world_size())
        n = len(data)
        if max_examples is not None:
            n = min(n, max_examples)
        return math.ceil(math.ceil(n / batch_size) / D.get_world_size())
    except TypeError:
        return None


# ---------------------------------------------------------------------- seeding
def _batch_seed(seed: int, *parts: Any) -> int:
    return zlib.crc32("/".join(map(str, (seed,) + parts)).encode()) & 0x7FFFFFFF


@contextmanager
def _seeded(s: int, device: torch.device):
    """Seed torch (CPU and the CUDA device), numpy and random; restore all afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


# ----------------------------------------------------------------------- attacks
#: CorruptionAttack options that ``corruption_kwargs`` may set (the seed is set per batch)
_CORRUPTION_KWARGS = {"corruptions", "severities", "backend", "batch_size", "progress"}


def _build_attacks(detector, tasks, attack_id, eps, alpha, steps, restarts, corruption_kwargs,
                   custom: Mapping[str, AttackFn] | None) -> dict[str, AttackFn | None]:
    """The attack of every task.  Built-in attacks get ``seed=None`` so that they draw
    from the global RNG, which :func:`_seeded` seeds per (set, task, batch)."""
    custom = dict(custom or {})
    out: dict[str, AttackFn | None] = {}
    pgd = dict(eps=eps, alpha=alpha, steps=steps, restarts=restarts, random_start=True, seed=None)
    ckw = dict(corruption_kwargs, seed=None)
    wanted = list(tasks) + (["in"] if attack_id else [])
    for task in wanted:
        if task in custom:
            out[task] = custom.pop(task)
            continue
        if task == "natural":
            out[task] = None
        elif task in ("linf", "in"):
            out[task] = OODPGD(detector, **pgd, target="ood" if task == "linf" else "in")
        elif task == "corruption":
            out[task] = CorruptionAttack(detector, **ckw)
        elif task == "compositional":
            out[task] = CompositionalAttack(detector, corruption_attack=CorruptionAttack(detector, **ckw),
                                            linf_attack=OODPGD(detector, **pgd), eps=eps, alpha=alpha,
                                            steps=steps, seed=None)
        else:  # pragma: no cover - validated earlier
            raise ValueError(f"unknown task {task!r}")
    if custom:
        raise ValueError(
            f"`attacks` has entries for tasks not being run: {sorted(custom)}; add them to `tasks` "
            "(or set attack_id=True for 'in')."
        )
    return out


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


def _run_attack(atk: AttackFn | None, x: torch.Tensor, seed: int) -> torch.Tensor:
    if atk is None:
        return x
    with _seeded(seed, x.device):
        adv = atk(x)
    if not isinstance(adv, torch.Tensor) or adv.shape != x.shape:
        raise ValueError(
            f"attack {type(atk).__name__} must return a tensor shaped like its input {tuple(x.shape)}, "
            f"got {getattr(adv, 'shape', type(adv).__name__)}."
        )
    return adv.detach()


# ------------------------------------------------------------------ scoring
class _Scorer:
    """Score/classify batches through the bare methods (the batch was checked once)."""

    def __init__(self, detector) -> None:
        self.det = detector
        self.need_grad = bool(getattr(detector, "needs_input_grad", False))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.need_grad):
            return self.det._score(x).detach()

    def classify(self, x: torch.Tensor) -> torch.Tensor | None:
        with torch.no_grad():
            try:
                return self.det._classify(x)
            except NotImplementedError:
                return None


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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


# ------------------------------------------------------------------ evaluate
def evaluate(
    detector: nn.Module,
    id_data: Any,
    ood_sets: Mapping[str, Any],
    tasks: Sequence[str] = TASKS,
    eps: float = 8 / 255,
    alpha: float = 1 / 255,
    steps: int = 40,
    restarts: int = 1,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
    corruption_backend: str | None = None,
    corruption_kwargs: Mapping[str, Any] | None = None,
    attack_id: bool = False,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    max_examples_per_set: int | None = None,
    keep_examples: int = 8,
    device: str | torch.device | None = None,
    tpr: float = 0.95,
    attacks: Mapping[str, AttackFn] | None = None,
    num_workers: int = 0,
    name: str | None = None,
) -> Report:
    """Evaluate ``detector`` on natural and attacked OOD sets (see the module docstring).

    Args:
        detector: a :class:`~atom_plugin.detectors.Detector` (or a classifier, turned into
            one by :func:`atom_plugin.detectors.as_detector`).  Fit it (Mahalanobis) first.
        id_data: in-distribution test data, a Dataset or DataLoader of ``(x, y)``;
            images ``(C, H, W)`` float in [0, 1].  Labels give the accuracies.
        ood_sets: ``{name: Dataset or DataLoader}``; labels are ignored.
        tasks: any of ``"natural", "corruption", "linf", "compositional"``.
        eps, alpha, steps, restarts: L∞ attack settings (paper: 8/255, 1/255, 40, 1).
        corruptions, severities, corruption_backend, corruption_kwargs: forwarded to the
            corruption and compositional attacks (``None`` = their defaults: 15 types x
            5 severities).
        attack_id: add the attacked-ID tasks ``"in"`` and ``"in_out"``.
        batch_size: batch size for Datasets (a DataLoader keeps its own).
        seed: base seed; each batch of each (set, task) gets its own derived seed.
        progress: show tqdm bars (rank 0 only).
        max_examples_per_set: use only the first N images of every set (ID and OOD).
        keep_examples: images kept per (set, task) for the example figure.
        device: run on this device (the detector is moved there); default: the
            detector's device.
        tpr: TPR level of the threshold (0.95).
        attacks: ``{task: callable images -> images}`` to replace the built-in attack of a
            task (e.g. a custom or third-party attack).
        num_workers: DataLoader workers for Datasets.
        name: a label for the report (e.g. the method name).

    Returns:
        a :class:`~atom_plugin.report.Report` (identical on every rank).
    """
    from .detectors import Detector, as_detector

    if not isinstance(detector, Detector):
        detector = as_detector(detector)
    if not getattr(detector, "fitted", True):
        raise ValueError(
            f"`detector` ({type(detector).__name__}) is not fitted; call detector.fit(id_train_loader) first."
        )
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("`tasks` is empty; pick from " + ", ".join(TASKS) + ".")
    for t in tasks:
        check_choice(t, "tasks", TASKS)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"`tasks` has duplicates: {list(tasks)}.")
    if not isinstance(ood_sets, Mapping) or not ood_sets:
        raise ValueError("`ood_sets` must be a non-empty dict {name: Dataset or DataLoader}.")
    for k in ood_sets:
        if not isinstance(k, str) or not k or k == "mean":
            raise ValueError(f"`ood_sets` keys must be non-empty set names other than 'mean', got {k!r}.")
    eps = check_float(eps, "eps", low=0.0)
    alpha = check_float(alpha, "alpha", low=0.0)
    steps = check_int(steps, "steps", low=1)
    restarts = check_int(restarts, "restarts", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    seed = check_int(seed, "seed", low=0)
    keep_examples = check_int(keep_examples, "keep_examples", low=0)
    tpr = check_float(tpr, "tpr", low=0.0, high=1.0, low_open=True)
    if max_examples_per_set is not None:
        max_examples_per_set = check_int(max_examples_per_set, "max_examples_per_set", low=1)
    ckw = dict(corruption_kwargs or {})
    if "seed" in ckw:
        raise ValueError("`corruption_kwargs` must not set 'seed': the corruption draws are seeded per batch from "
                         "evaluate(seed=...); pass that instead.")
    unknown = sorted(set(ckw) - _CORRUPTION_KWARGS)
    if unknown:
        raise ValueError(f"`corruption_kwargs` has unknown keys {unknown}; CorruptionAttack takes "
                         f"{sorted(_CORRUPTION_KWARGS)}.")
    if corruptions is not None:
        ckw["corruptions"] = list(corruptions)
    if severities is not None:
        ckw["severities"] = list(severities)
    if corruption_backend is not None:
        ckw["backend"] = corruption_backend

    if device is not None:
        device = torch.device(device)
        detector.to(device)
    else:
        p = next(detector.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")

    was_training = detector.training
    detector.eval()
    try:
        atks = _build_attacks(detector, tasks, attack_id, eps, alpha, steps, restarts, ckw, attacks)
        scorer = _Scorer(detector)
        show = progress and D.is_main_process()

        # --- in-distribution ---------------------------------------------------
        local: list[tuple[int, dict]] = []
        kept = 0
        for b, x, y in _bar(_owned_batches(id_data, "id_data", batch_size, max_examples_per_set, num_workers),
                            show, "ID", _num_batches(id_data, batch_size, max_examples_per_set)):
            x = check_images(x.to(device), "id_data images")  # every batch: scores sync per batch anyway
            pay: dict[str, Any] = {"score": scorer.score(x).cpu().numpy().astype(np.float64)}
            if y is not None and y.dim() == 1 and bool((y >= 0).all()):  # -1 = unlabelled / OOD
                logits = scorer.classify(x)
                if logits is not None:
                    pay["correct"] = (logits.argmax(1).cpu() == y.cpu()).numpy()
            if attack_id:
                xa = _run_attack(atks["in"], x, _batch_seed(seed, "__id__", "in", b))
                pay["score_in"] = scorer.score(xa).cpu().numpy().astype(np.float64)
                if "correct" in pay:
                    la = scorer.classify(xa)
                    pay["correct_in"] = (la.argmax(1).cpu() == y.cpu()).numpy()
                if kept < keep_examples:
                    pay["ex_in"] = _to_uint8(xa[: keep_examples - kept])
            if kept < keep_examples:
                pay["ex_natural"] = _to_uint8(x[: keep_examples - kept])
                kept += min(x.shape[0], keep_examples - kept)
            local.append((b, pay))
        parts = _merge(local)
        id_scores = _cat(parts, "score")
        if id_scores is None:
            raise ValueError("`id_data` yielded no images.")
        correct = _cat(parts, "correct")
        if correct is not None and correct.size != id_scores.size:
            correct = None  # some batches had no labels
        id_in = _cat(parts, "score_in") if attack_id else None
        id_examples = {"natural": _examples(parts, "ex_natural", keep_examples)}
        if attack_id:
            id_examples["in"] = _examples(parts, "ex_in", keep_examples)
        thr = threshold_at_tpr(id_scores, tpr)

        id_metrics: dict[str, Any] = {"n_id": int(id_scores.size), "threshold": thr,
                                      "tpr": float(np.mean(id_scores <= thr)),
                                      "fnr": float(np.mean(id_scores > thr))}
        if correct is not None:
            id_metrics["accuracy"] = float(np.mean(correct))
            id_metrics["e2e_accuracy"] = float(np.mean(correct & (id_scores <= thr)))
        if attack_id:
            id_metrics["tpr_in"] = float(np.mean(id_in <= thr))
            ci = _cat(parts, "correct_in")
            if ci is not None and ci.size == id_in.size:
                id_metrics["accuracy_in"] = float(np.mean(ci))
                id_metrics["e2e_accuracy_in"] = float(np.mean(ci & (id_in <= thr)))

        # --- OOD sets ----------------------------------------------------------
        metrics: dict[str, dict[str, dict[str, float]]] = {}
        ood_scores: dict[str, dict[str, np.ndarray]] = {}
        wins: dict[str, dict[str, dict[str, int]]] = {}
        examples: dict[str, dict[str, np.ndarray]] = {"__id__": {k: v for k, v in id_examples.items() if v is not None}}
        for set_name, data in ood_sets.items():
            local = []
            kept = 0
            for b, x, _ in _bar(_owned_batches(data, set_name, batch_size, max_examples_per_set, num_workers),
                                show, set_name, _num_batches(data, batch_size, max_examples_per_set)):
                x = check_images(x.to(device), f"ood_sets[{set_name!r}] images")
                pay = {}
                for task in tasks:
                    xa = _run_attack(atks[task], x, _batch_seed(seed, set_name, task, b))
                    pay[task] = scorer.score(xa).cpu().numpy().astype(np.float64)
                    if kept < keep_examples:
                        pay["ex_" + task] = _to_uint8(xa[: keep_examples - kept])
                kept += min(x.shape[0], max(keep_examples - kept, 0))
                local.append((b, pay))
            parts = _merge(local)
            ood_scores[set_name] = {}
            examples[set_name] = {}
            for task in tasks:
                s = _cat(parts, task)
                if s is None:
                    raise ValueError(f"`ood_sets[{set_name!r}]` yielded no images.")
                ood_scores[set_name][task] = s
                ex = _examples(parts, "ex_" + task, keep_examples)
                if ex is not None:
                    examples[set_name][task] = ex
            metrics[set_name] = _set_metrics(id_scores, id_in, ood_scores[set_name], thr, tpr)
            for task in ("corruption", "compositional"):
                h = _take_histogram(atks.get(task)) if task in tasks else None
                if h is not None:
                    wins.setdefault(set_name, {})[task] = h
    finally:
        detector.train(was_training)

    scores = {"id": {"natural": id_scores}, "ood": ood_scores}
    if id_in is not None:
        scores["id"]["in"] = id_in
    config = {
        "detector": type(detector).__name__, "tasks": list(tasks), "attack_id": bool(attack_id),
        "eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts,
        "corruption_kwargs": {k: v for k, v in ckw.items()}, "tpr_level": tpr, "seed": seed,
        "batch_size": batch_size, "max_examples_per_set": max_examples_per_set,
        "world_size": D.get_world_size(), "ood_sets": list(ood_sets),
        "attacks": {k: (type(v).__name__ if v is not None else None) for k, v in atks.items()},
    }
    if wins:
        config["corruption_wins"] = wins  # {set: {task: {corruption or "clean": images won}}}
    return Report(metrics=metrics, id_metrics=id_metrics, scores=scores, examples=examples,
                  config=config, name=name)


def _set_metrics(id_nat: np.ndarray, id_in: np.ndarray | None, ood: Dict[str, np.ndarray],
                 thr: float, tpr: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task, s in ood.items():
        m = ood_metrics(id_nat, s, tpr)
        m["fpr_at_threshold"] = float(np.mean(s <= thr))
        m["tpr_at_threshold"] = float(np.mean(id_nat <= thr))
        out[task] = m
    if id_in is not None:
        pairs = {"in": ood.get("natural"), "in_out": ood.get("linf")}
        for task, s in pairs.items():
            if s is None:
                continue
            m = ood_metrics(id_in, s, tpr)
            m["fpr_at_threshold"] = float(np.mean(s <= thr))
            m["tpr_at_threshold"] = float(np.mean(id_in <= thr))
            out[task] = m
    return out


def _bar(it, show: bool, desc: str, total: int | None):
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)
