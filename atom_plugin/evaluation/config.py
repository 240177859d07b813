"""``EvalConfig``: every setting of :func:`atom_plugin.evaluation.evaluate`, validated once
and written into the report (``report.config["eval_config"]``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from .._validation import check_choice, check_float, check_int

__all__ = ["EvalConfig", "PAPER_TASKS"]

#: the paper's four OOD tasks (Table 1 column groups)
PAPER_TASKS = ("natural", "corruption", "linf", "compositional")

#: keys of the legacy ``corruption_kwargs`` argument -> EvalConfig fields
_LEGACY_CORRUPTION_KWARGS = {"corruptions": "corruptions", "severities": "severities", "backend": "corruption_backend",
                             "batch_size": "corruption_batch_size", "progress": "corruption_progress",
                             "table": "corruption_table"}


@dataclass(frozen=True)
class EvalConfig:
    """Settings of the robust OOD evaluation; defaults are the ATOM paper's protocol.

    Attributes:
        tasks: OOD tasks to run, names from :func:`atom_plugin.evaluation.list_tasks`
            (the paper's: ``natural``, ``corruption``, ``linf``, ``compositional``).
        attack_id: also attack the ID inputs (tasks ``in`` and ``in_out``, ALOE-style).
        eps, alpha, steps, restarts: the L∞ attack (paper: 8/255, 1/255, 40, 1).
        linf_attack: registered attack used by the ``linf`` and ``compositional`` tasks
            (``"pgd"`` as in the paper; ``"apgd"``, ``"auto"``, ``"square"``, ... see
            :func:`atom_plugin.attacks.list_attacks`).  A detector declared
            non-differentiable gets the black-box ``blackbox_attack`` instead.
        attack_version: budget of a parameter-free ensemble attack (``linf_attack="auto"``):
            ``"standard"``, ``"fast"`` or ``"rand"`` (with EOT, for randomized defenses).
        blackbox_attack: score-only attack for non-differentiable detectors (``"square"``).
        queries: query budget of score-only attacks per image.
        early_stop: stop attacking an image once the detector accepts it at the threshold
            (the FPR is unchanged, AUROC/AUPR are then no longer worst-case; the report
            says so).  Off by default.
        corruptions, severities: the corruption set (``None``: 15 types x 5 severities).
        corruption_backend: ``"torch"`` or ``"imagecorruptions"`` (``None``: default).
        corruption_table: severity constants, ``"auto"`` (by image size), ``"cifar"``,
            ``"tinyimagenet"`` or ``"imagenet"``.
        corruption_batch_size, corruption_progress: passed to the corruption attack.
        diagnostics: run the gradient-masking checks (zero/NaN input gradients, black-box
            beating white-box, more steps not helping, an unbounded attack short of 100%
            FPR; :func:`atom_plugin.attacks.diagnostics.masking_diagnostics`) on the first
            64 images of each OOD set; numbers in ``report.config["diagnostics"]``, every
            triggered check a warning in the report.
        batch_size: batch size for Datasets (a DataLoader keeps its own).
        seed: base seed; each batch of each (set, task) gets its own derived seed.
        progress: tqdm bars (rank 0 only).
        max_examples_per_set: only the first N images of every set (ID and OOD).
        keep_examples: images kept per (set, task) for the example figure.
        tpr: TPR level of the threshold (0.95).
        num_workers: DataLoader workers for Datasets.
        device: run here (the detector is moved); ``None``: the detector's device.
        name: label of the report.
    """

    tasks: Tuple[str, ...] = PAPER_TASKS
    attack_id: bool = False
    eps: float = 8 / 255
    alpha: float = 1 / 255
    steps: int = 40
    restarts: int = 1
    linf_attack: str = "pgd"
    attack_version: str = "standard"
    blackbox_attack: str = "square"
    queries: int = 1000
    early_stop: bool = False
    corruptions: Optional[Tuple[str, ...]] = None
    severities: Optional[Tuple[int, ...]] = None
    corruption_backend: Optional[str] = None
    corruption_table: str = "auto"
    corruption_batch_size: Optional[int] = None
    corruption_progress: bool = False
    diagnostics: bool = False
    batch_size: int = 128
    seed: int = 0
    progress: bool = True
    max_examples_per_set: Optional[int] = None
    keep_examples: int = 8
    tpr: float = 0.95
    num_workers: int = 0
    device: Optional[str] = None
    name: Optional[str] = None

    def __post_init__(self) -> None:
        from .tasks import TASKS

        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        if not tasks:
            raise ValueError("`tasks` is empty; pick from " + ", ".join(TASKS.names()) + ".")
        for t in tasks:
            if t not in TASKS or TASKS.get(t).kind != "ood":
                raise ValueError(f"`tasks`: unknown task {t!r}; use any of {', '.join(list_ood_tasks())}.")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"`tasks` has duplicates: {list(tasks)}.")
        s = object.__setattr__
        s(self, "tasks", tasks)
        s(self, "attack_id", bool(self.attack_id))
        s(self, "eps", check_float(self.eps, "eps", low=0.0, high=1.0))
        s(self, "alpha", check_float(self.alpha, "alpha", low=0.0))
        s(self, "steps", check_int(self.steps, "steps", low=1))
        s(self, "restarts", check_int(self.restarts, "restarts", low=1))
        s(self, "queries", check_int(self.queries, "queries", low=1))
        check_choice(self.attack_version, "attack_version", ("standard", "fast", "rand"))
        from ..attacks import ATTACKS

        for field_, threat in (("linf_attack", "linf"), ("blackbox_attack", "linf")):
            name = getattr(self, field_)
            entry = ATTACKS.get(name) if name in ATTACKS else None
            if entry is None or entry.threat != threat:
                ok = [n for n in ATTACKS.names() if ATTACKS.get(n).threat == threat
                      and (field_ == "linf_attack" or not ATTACKS.get(n).gradient)]
                if field_ == "blackbox_attack" and not ok:
                    continue  # no score-only attack registered: checked when one is needed
                raise ValueError(f"`{field_}` {name!r} is not a registered L-inf attack; use one of {ok}.")
        if self.corruptions is not None:
            s(self, "corruptions", (self.corruptions,) if isinstance(self.corruptions, str)
              else tuple(self.corruptions))
        if self.severities is not None:
            s(self, "severities", tuple(check_int(v, "severities", low=1, high=5) for v in self.severities))
        if self.corruption_backend is not None:
            check_choice(self.corruption_backend, "corruption_backend", ("torch", "imagecorruptions"))
        if not isinstance(self.corruption_table, str) or not self.corruption_table:
            raise ValueError(f"`corruption_table` must be a table name such as 'auto', got {self.corruption_table!r}.")
        if self.corruption_batch_size is not None:
            check_int(self.corruption_batch_size, "corruption_batch_size", low=1)
        s(self, "batch_size", check_int(self.batch_size, "batch_size", low=1))
        s(self, "seed", check_int(self.seed, "seed", low=0))
        s(self, "keep_examples", check_int(self.keep_examples, "keep_examples", low=0))
        s(self, "tpr", check_float(self.tpr, "tpr", low=0.0, high=1.0, low_open=True))
        s(self, "num_workers", check_int(self.num_workers, "num_workers", low=0))
        if self.max_examples_per_set is not None:
            s(self, "max_examples_per_set", check_int(self.max_examples_per_set, "max_examples_per_set", low=1))
        if self.device is not None:
            s(self, "device", str(self.device))

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> "EvalConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown EvalConfig fields {unknown}; valid: {sorted(names)}.")
        return cls(**dict(d))

    @classmethod
    def build(cls, config: "EvalConfig | None" = None, **overrides: Any) -> "EvalConfig":
        """``config`` (default: the paper's protocol) with ``overrides``; also accepts the
        legacy ``evaluate`` keywords ``corruption_kwargs={...}`` (keys ``corruptions``,
        ``severities``, ``backend``, ``batch_size``, ``progress``, ``table``)."""
        if config is not None and not isinstance(config, EvalConfig):
            raise TypeError(f"`config` must be an EvalConfig, got {type(config).__name__}.")
        ckw = overrides.pop("corruption_kwargs", None)
        if ckw:
            if not isinstance(ckw, Mapping):
                raise TypeError(f"`corruption_kwargs` must be a dict, got {type(ckw).__name__}.")
            if "seed" in ckw:
                raise ValueError("`corruption_kwargs` must not set 'seed': the corruption draws are seeded per batch "
                                 "from evaluate(seed=...); pass that instead.")
            unknown = sorted(set(ckw) - set(_LEGACY_CORRUPTION_KWARGS))
            if unknown:
                raise ValueError(f"`corruption_kwargs` has unknown keys {unknown}; it takes "
                                 f"{sorted(_LEGACY_CORRUPTION_KWARGS)}.")
            for k, v in ckw.items():
                overrides.setdefault(_LEGACY_CORRUPTION_KWARGS[k], v)
        overrides = {k: v for k, v in overrides.items() if not (k in _NONE_MEANS_DEFAULT and v is None)}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"evaluate() got unknown settings {unknown}; EvalConfig fields are {sorted(names)}.")
        return dataclasses.replace(config, **overrides) if config is not None else cls(**overrides)


#: legacy keywords for which ``None`` meant "the default"
_NONE_MEANS_DEFAULT = {"corruptions", "severities", "corruption_backend"}


def list_ood_tasks() -> list:
    from .tasks import TASKS

    return [n for n in TASKS.names() if TASKS.get(n).kind == "ood"]
