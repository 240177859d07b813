"""Training configuration with the ATOM paper's defaults (Appendix B.1)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._validation import check_choice, check_float, check_int

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TrainConfig", "METHODS", "MINING_METHODS", "DEFAULT_LAMBDA"]

#: every training recipe; see :mod:`atom_plugin.training.methods`
METHODS = ("atom", "ntom", "oe", "acet", "aloe", "aoe")
#: methods that select their outliers with informative outlier mining (Algorithm 1)
MINING_METHODS = ("atom", "ntom")
#: lambda per method when ``TrainConfig.lam`` is None (paper Sec. 5.1 and App. B.3; ALOE and AOE follow OE)
DEFAULT_LAMBDA = {"atom": 1.0, "ntom": 1.0, "oe": 0.5, "acet": 1.0, "aloe": 0.5, "aoe": 0.5}


@dataclass
class TrainConfig:
    """Everything that controls a training run; defaults are the paper's CIFAR-10 setup.

    Optimisation (App. B.1): SGD, lr 0.1, Nesterov momentum 0.9, weight decay 1e-4,
    100 epochs, lr x0.1 at 50/75/90% of the epochs (``milestones=None``), 64 ID + 128
    outlier images per step.  Mining (Sec. 5.1): ``q`` = 0.125, ``N`` = 400,000,
    ``n`` = 100,000 (SVHN: q=0, N=586,056, n=146,514; CIFAR-100: q=0.5).
    Inner maximisation: L-inf PGD, eps 8/255, 5 steps of 2/255, random start, on half of
    the outlier batch (``adv_fraction``).

    Attributes:
        method: one of ``atom, ntom, oe, acet, aloe, aoe``.
        epochs: training epochs ``m``.
        lr, momentum, nesterov, weight_decay: SGD settings.
        milestones: epochs at which the lr is multiplied by ``lr_decay``; ``None`` means
            50%, 75% and 90% of ``epochs`` (the paper's 50/75/90 of 100 and 10/15/18 of 20).
        batch_size: in-distribution images per step.
        outlier_batch_size: outlier images per step.
        lam: weight of the outlier loss; ``None`` = method default (:data:`DEFAULT_LAMBDA`).
        q, pool_size, mined_size: Algorithm 1's ``q``, ``N``, ``n`` (ATOM, NTOM only).
        eps, alpha, steps, random_start: the training attack (ATOM, ACET, ALOE; AOE uses
            one FGSM step of size ``eps``).
        adv_fraction: fraction of each outlier batch that is attacked (ATOM, ACET: 0.5).
        seed: seeds model-independent randomness (data order, candidates, attacks).
        num_workers: DataLoader workers.
        score_batch_size: batch size used to score mining candidates; ``None``: 512 on
            CUDA, 128 on the CPU (cache-sized: on one CPU thread 64-128 scored ~1.8x faster
            per image than 512, ``benchmarks/README.md``).
        amp: ``None``, ``"bf16"`` or ``"fp16"`` autocast (CUDA only; ignored with a warning
            on CPU).  ``channels_last``: NHWC memory format of the model *and* its inputs
            (for CUDA with AMP).
        input_channels_last: feed the model NHWC inputs (mining, attack and train step)
            without converting its weights; ``None``: on the CPU for models with a ``Conv2d``
            (oneDNN then skips per-layer layout reorders: measured ~1.8x faster scoring,
            ~1.2x faster forward + backward on the SmallCNN).  Same float32 math; results
            agree with NCHW inputs to ~1e-7, not bit for bit (``False`` reproduces NCHW).
        progress: tqdm progress bars.  ``log_every``: steps between progress updates and
            NaN checks (each is one host-device sync).
        tensorboard: also log to TensorBoard (needs ``tensorboard`` installed).
        histogram_bins: bins of the per-epoch mining score histogram.
        keep_checkpoints: also keep ``epoch_XXXX.pt`` every this many epochs (0 = only
            ``last.pt``).
    """

    method: str = "atom"
    epochs: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    milestones: list[int] | None = None
    lr_decay: float = 0.1
    batch_size: int = 64
    outlier_batch_size: int = 128
    lam: float | None = None
    q: float = 0.125
    pool_size: int = 400_000
    mined_size: int = 100_000
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 5
    random_start: bool = True
    adv_fraction: float = 0.5
    seed: int = 0
    num_workers: int = 0
    score_batch_size: int | None = None
    amp: str | None = None
    channels_last: bool = False
    input_channels_last: bool | None = None
    progress: bool = True
    log_every: int = 20
    tensorboard: bool = False
    histogram_bins: int = 50
    keep_checkpoints: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived values ---------------------------------------------------------------
    @property
    def lam_value(self) -> float:
        """``lam`` or the method's default."""
        return DEFAULT_LAMBDA[self.method] if self.lam is None else float(self.lam)

    @property
    def mines(self) -> bool:
        """True for methods that use informative outlier mining."""
        return self.method in MINING_METHODS

    def score_batch(self, device: "torch.device | str") -> int:
        """``score_batch_size``, or its device default (512 on CUDA, 128 elsewhere)."""
        if self.score_batch_size is not None:
            return int(self.score_batch_size)
        import torch

        return 512 if torch.device(device).type == "cuda" else 128

    def milestone_epochs(self) -> list[int]:
        if self.milestones is not None:
            return sorted(int(m) for m in self.milestones)
        return sorted({max(1, round(self.epochs * f)) for f in (0.5, 0.75, 0.9)})

    # -- checks -----------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        check_choice(self.method, "method", METHODS)
        check_int(self.epochs, "epochs", low=1)
        check_float(self.lr, "lr", low=0.0, low_open=True)
        check_float(self.momentum, "momentum", low=0.0, high=1.0)
        check_float(self.weight_decay, "weight_decay", low=0.0)
        check_float(self.lr_decay, "lr_decay", low=0.0, low_open=True)
        if self.milestones is not None:
            self.milestones = [check_int(int(m) if not isinstance(m, bool) else m, "milestones[i]", low=1)
                               for m in self.milestones]
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.outlier_batch_size, "outlier_batch_size", low=1)
        if self.lam is not None:
            lam = check_float(self.lam, "lam")
            if lam < 0:
                raise ValueError(f"`lam` (lambda, the outlier-loss weight) must be >= 0, got {lam}.")
        check_float(self.q, "q", low=0.0, high=1.0)
        check_int(self.pool_size, "pool_size (N)", low=1)
        check_int(self.mined_size, "mined_size (n)", low=1)
        if self.mined_size > self.pool_size:
            raise ValueError(f"`mined_size` (n = {self.mined_size}) must be <= `pool_size` (N = {self.pool_size}).")
        q_max = 1.0 - self.mined_size / self.pool_size
        if self.q > q_max + 1e-12:
            raise ValueError(f"`q` must lie in [0, 1 - n/N] = [0, {q_max:.6g}] for N = {self.pool_size}, "
                             f"n = {self.mined_size}; got {self.q}.")
        check_float(self.eps, "eps", low=0.0, high=1.0)
        check_float(self.alpha, "alpha", low=0.0, high=1.0)
        check_int(self.steps, "steps", low=0)
        check_float(self.adv_fraction, "adv_fraction", low=0.0, high=1.0)
        check_int(self.seed, "seed", low=0)
        check_int(self.num_workers, "num_workers", low=0)
        if self.score_batch_size is not None:
            check_int(self.score_batch_size, "score_batch_size", low=1)
        if self.input_channels_last is not None and not isinstance(self.input_channels_last, bool):
            raise TypeError(f"`input_channels_last` must be True, False or None (auto), got "
                            f"{self.input_channels_last!r}.")
        if self.amp is not None:
            check_choice(self.amp, "amp", ("bf16", "fp16"))
        check_int(self.log_every, "log_every", low=1)
        check_int(self.histogram_bins, "histogram_bins", low=1)
        check_int(self.keep_checkpoints, "keep_checkpoints", low=0)
        return self

    # -- plain-dict round trip (checkpoints are loaded with weights_only=True) -----------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields {unknown}; valid fields: {sorted(names)}.")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
