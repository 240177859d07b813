"""The training loop shared by ATOM, NTOM, OE, ACET, ALOE and AOE.

Per epoch (Algorithm 1): mine outliers with the current model (ATOM/NTOM; the others
draw outliers uniformly at random), then one pass over the in-distribution training
set with ``batch_size`` ID + ``outlier_batch_size`` outlier images per step.  Each step:
attacks in eval mode (:meth:`Recipe.perturb`, parameters frozen so the attack's backward
builds no weight-gradient graph), **one** train-mode forward over ``cat(ID, outliers)``
(no forward is repeated: the attack's last iterate is not re-scored, the clean images are
forwarded once), the recipe's loss, an SGD step.  Forward counts per step are tested:
ATOM ``steps + 1``, the others 1; mining ``ceil(N / score_batch)`` per epoch.

Speed (exact: same algorithm, float32): mining scores cache-sized batches
(``score_batch_size``), keeps the scores on the device, reads into pinned memory on
CUDA; on the CPU the model gets NHWC inputs (``input_channels_last``); no host-device
sync inside the step loop except every ``log_every`` steps.  The lr decays at the end of an
epoch; a checkpoint (``<out_dir>/last.pt``) and a JSON line in ``metrics.jsonl`` are
written after every epoch.

Under ``torchrun`` (``torch.distributed`` initialised, e.g. with
:func:`atom_plugin.distributed.init_from_env`) the model is wrapped in
``DistributedDataParallel``; the ID data and the outliers are sharded across ranks with
``DistributedSampler`` semantics (a shared permutation, padded, strided) and mining
shards the ``N`` candidates (see :class:`~atom_plugin.mining.OutlierMiner`).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from .. import distributed as dist_utils
from .._utils import collective_device, module_device, progress, split_batch
from .._validation import check_images
from ..mining import OutlierMiner, channels_last_helps
from ..models import head_spec
from .checkpoint import FORMAT, load_checkpoint, prepare_out_dir, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .methods import make_recipe

__all__ = ["Trainer", "train", "TrainingDiverged", "channels_last_inputs"]

#: config fields that may differ between a checkpoint and the run that resumes it
RESUMABLE_CHANGES = {"epochs", "milestones", "progress", "log_every", "tensorboard", "num_workers",
                     "keep_checkpoints", "score_batch_size", "input_channels_last"}


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _seeded(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + stream * 104_729) % (2 ** 63))


def _shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """DistributedSampler semantics: pad ``order`` to a multiple of ``world`` by wrapping
    around, then take every ``world``-th element starting at ``rank``."""
    if world == 1:
        return order
    total = int(math.ceil(len(order) / world)) * world
    if total > len(order):
        reps = int(math.ceil(total / len(order)))
        order = order.repeat(reps)[:total]
    return order[rank:total:world]


def _check_datasets(train_set: Dataset, aux_set: Dataset, model: nn.Module | None = None) -> None:
    """Map-style, non-empty; the first items are images in [0, 1] (and a label for ID)."""
    for name, ds in (("train_set", train_set), ("aux_set", aux_set)):
        try:
            size = len(ds)
        except TypeError:
            raise TypeError(f"`{name}` must be a map-style Dataset with __len__, got {type(ds).__name__}.") from None
        if size == 0:
            raise ValueError(f"`{name}` is empty.")
    item = train_set[0]
    if not (isinstance(item, (tuple, list)) and len(item) > 1):
        raise ValueError("`train_set` items must be (image, label) pairs; got a bare image.")
    check_images(torch.as_tensor(item[0]).unsqueeze(0), "train_set[0] image", model=model)
    item = aux_set[0]
    xa = item[0] if isinstance(item, (tuple, list)) else item
    check_images(torch.as_tensor(xa).unsqueeze(0), "aux_set[0] image", model=model)


@contextlib.contextmanager
def channels_last_inputs(module: nn.Module, enabled: bool = True):
    """Within the block, ``module`` receives its first (image) argument in NHWC memory
    format (a forward pre-hook; the weights are not touched; removed afterwards)."""
    if not enabled:
        yield
        return

    def to_nhwc(_mod, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
        return None

    handle = module.register_forward_pre_hook(to_nhwc)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]):
    """``requires_grad=False`` on ``params`` within the block (the attack needs input
    gradients only: no weight-gradient graph is recorded), restored afterwards."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Trainer:
    """Train ``model`` with one of the methods of :data:`~atom_plugin.training.METHODS`.

    Args:
        model: any ``nn.Module`` mapping images ``(B, C, H, W)`` in [0, 1] to ``K + R``
            logits (e.g. a timm/RobustBench model under :class:`~atom_plugin.Normalize`,
            given a reject class by :func:`~atom_plugin.with_reject_head` for ATOM/NTOM).
            Trained in place.
        train_set: in-distribution training set, items ``(image (C,H,W) in [0,1], label)``.
        aux_set: auxiliary outlier set, items ``(image, -1)`` or bare images.
        config: a :class:`TrainConfig` (paper defaults if ``None``).
        num_classes: ``K``; default from the model (:func:`~atom_plugin.head_spec`).
        out_dir: where ``last.pt``, ``metrics.jsonl``, ``mining.json`` go (``None``: no files,
            no resume).
        device: default: the model's device.
        resume: ``True`` to continue from ``<out_dir>/last.pt`` if it exists, a path to
            continue from that checkpoint, ``False`` to start fresh.
        overwrite: start fresh in an ``out_dir`` that holds a previous run (its files are
            deleted).  Without ``resume`` or ``overwrite`` such an ``out_dir`` is refused, as is
            one that is a file, lies under a file or cannot be written
            (:func:`~atom_plugin.training.checkpoint.prepare_out_dir`), before any work.
        meta: extra plain values stored at the top level of every checkpoint (e.g.
            ``{"arch": "resnet18"}``, read by ``atom-ood eval --checkpoint``).

    Raises ``ValueError`` for bad settings: negative ``lam``, ``q`` outside
    ``[0, 1 - n/N]``, an outlier set smaller than ``N``, a K-way model for ATOM/NTOM.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, aux_set: Dataset, config: TrainConfig | None = None, *,
                 num_classes: int | None = None, out_dir: str | Path | None = None,
                 device: torch.device | str | None = None, resume: bool | str | Path = False,
                 overwrite: bool = False, meta: dict[str, Any] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}.")
        self.cfg = config.validate()
        _check_datasets(train_set, aux_set, model)
        self.k, self.r = head_spec(model, num_classes)
        self.recipe = make_recipe(self.cfg, self.k, self.r)
        self.train_set, self.aux_set = train_set, aux_set
        self._setup_model(model, device)
        self._setup_optimizer()
        self.miner: OutlierMiner | None = None
        if self.cfg.mines:
            self.miner = OutlierMiner(aux_set, self.cfg.pool_size, self.cfg.mined_size, self.cfg.q,
                                      num_classes=self.k, batch_size=self.cfg.score_batch(self.device),
                                      num_workers=self.cfg.num_workers, seed=self.cfg.seed,
                                      bins=self.cfg.histogram_bins, progress=self.cfg.progress,
                                      channels_last=self.nhwc_inputs)
        self.epoch = 0  # completed epochs
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:  # the out-dir rule, before any work (training.checkpoint)
            prepare_out_dir(self.out_dir, resume=resume, overwrite=overwrite, main=self.main)
        self.meta = dict(meta or {})
        self._tb = None
        if resume:
            self._resume(resume)

    # -- construction steps -------------------------------------------------------------
    def _setup_model(self, model: nn.Module, device) -> None:
        """Device, memory format, DDP wrapper, autocast dtype and loss scaler."""
        self.device = torch.device(device) if device is not None else module_device(model)
        self.module = model.to(self.device)
        if self.cfg.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        flag = self.cfg.input_channels_last
        self.nhwc_inputs = bool(channels_last_helps(self.module, self.device) if flag is None else flag)
        self.rank, self.world = dist_utils.get_rank(), dist_utils.get_world_size()
        self.main = self.rank == 0
        self.model: nn.Module = self.module
        if dist_utils.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.amp_dtype = None
        if self.cfg.amp is not None:
            if self.device.type != "cuda":
                warnings.warn(f"amp={self.cfg.amp!r} is only used on CUDA; training in float32 on {self.device}.",
                              stacklevel=3)
            else:
                self.amp_dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _setup_optimizer(self) -> None:
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                         nesterov=self.cfg.nesterov and self.cfg.momentum > 0,
                                         weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, self.cfg.milestone_epochs(),
                                                              gamma=self.cfg.lr_decay)

    def _resume(self, resume: bool | str | Path) -> None:
        path = Path(resume) if not isinstance(resume, bool) else \
            (self.out_dir / "last.pt" if self.out_dir is not None else None)
        if path is None:
            raise ValueError("`resume=True` needs `out_dir` (the checkpoint is <out_dir>/last.pt), or pass a path.")
        if isinstance(resume, bool) and not path.is_file():
            return  # nothing to resume yet: fresh start
        self.load_state(load_checkpoint(path, map_location=self.device))

    # -- state --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        rng = rng_state()
        per_rank = dist_utils.all_gather_object(rng) if dist_utils.is_distributed() else [rng]
        return {
            **self.meta,
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "num_classes": self.k,
            "num_reject": self.r,
            "epoch": self.epoch,
            "step": self.step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {k: (dict(v) if k == "milestones" else v) for k, v in self.scheduler.state_dict().items()},
            "scaler": self.scaler.state_dict(),
            "rng": per_rank,
            "mining": self.miner.state_dict() if self.miner is not None else None,
            "history": [dict(h) for h in self.history],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; refuses one made with different training settings."""
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        now = self.cfg.to_dict()
        diff = {k: (saved[k], now[k]) for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]}
        if diff:
            raise ValueError("Cannot resume: the checkpoint was trained with different settings "
                             + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in sorted(diff.items()))
                             + "; use the same settings or start a fresh out_dir.")
        if (state["num_classes"], state["num_reject"]) != (self.k, self.r):
            raise ValueError(f"Cannot resume: checkpoint has K={state['num_classes']}, R={state['num_reject']}, "
                             f"the model K={self.k}, R={self.r}.")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        sched.pop("milestones", None)  # keep this run's milestones (they may be changed on resume)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **sched})
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
        if self.miner is not None and state.get("mining") is not None:
            self.miner.load_state_dict(state["mining"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = [dict(h) for h in state.get("history", [])]
        if self.main and self.out_dir is not None:  # rewrite the log so it matches the checkpoint
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "w") as f:
                for h in self.history:
                    f.write(json.dumps(h) + "\n")

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank must call it under DDP)."""
        state = self.state_dict()  # collective under DDP
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or not self.main:
            return path
        return save_checkpoint(state, path)

    # -- data ---------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, indices: torch.Tensor, batch_size: int, generator: torch.Generator
                ) -> DataLoader:
        # its own generator: a DataLoader iterator otherwise draws its worker seed from the
        # global RNG (and tqdm around it changed how much), which the training PGD also uses
        return DataLoader(dataset, batch_size=batch_size, sampler=indices.tolist(), shuffle=False,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          drop_last=False, generator=generator)

    def _id_indices(self, epoch: int) -> torch.Tensor:
        order = torch.randperm(len(self.train_set), generator=_seeded(self.cfg.seed, epoch, 1))
        return _shard(order, self.rank, self.world)

    def _outlier_indices(self, epoch: int, pool: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps * outlier_batch_size`` indices from ``pool``: shuffled passes over this
        rank's shard of the pool, repeated as needed."""
        g = _seeded(self.cfg.seed, epoch, 2)
        need = steps * self.cfg.outlier_batch_size
        chunks, have = [], 0
        while have < need:
            shard = _shard(pool[torch.randperm(len(pool), generator=g)], self.rank, self.world)
            chunks.append(shard)
            have += len(shard)
        return torch.cat(chunks)[:need]

    # -- the loop -----------------------------------------------------------------------
    def _sync_buffers(self) -> None:
        """Under DDP, copy rank 0's buffers (BatchNorm running statistics) to every rank, so
        eval-mode mining and the saved model are the same everywhere (DDP broadcasts them
        only at the start of each forward)."""
        if not dist_utils.is_distributed():
            return
        import torch.distributed as dist

        for buf in self.module.buffers():
            if buf.device.type == "cpu" and dist.get_backend() == "nccl":
                continue
            dist.broadcast(buf.data, src=0)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _check_host_batch(self, x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor, epoch: int,
                          step: int) -> None:
        """Images in [0, 1] and labels in [0, K) for the tensors of a batch that are still on
        the CPU (clear errors here instead of silent nonsense or a device-side assert later;
        a dataset that yields device tensors is checked by the models' own errors only)."""
        where = f"(epoch {epoch + 1}, step {step})"
        if x_in.device.type == "cpu":
            check_images(x_in, f"train_set images {where}")
        if x_out.device.type == "cpu":
            check_images(x_out, f"aux_set images {where}")
        if y_in.device.type == "cpu" and y_in.numel() and (int(y_in.min()) < 0 or int(y_in.max()) >= self.k):
            raise ValueError(f"train_set labels {where} must lie in [0, {self.k}) for K = {self.k} classes; got "
                             f"[{int(y_in.min())}, {int(y_in.max())}].")

    def _diverged(self, epoch: int, step: int) -> TrainingDiverged:
        kept = f"the last good checkpoint ({self.checkpoint_path}, epoch {self.epoch}) is kept" \
            if self.checkpoint_path is not None and self.checkpoint_path.is_file() else "no checkpoint was written"
        return TrainingDiverged(
            f"The training loss became NaN/inf in epoch {epoch + 1}, step {step}; stopping ({kept}). "
            "Lower `lr`, disable `amp`, or check the data for NaN values.")

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Mine (if the method does), then one pass over the ID data; returns the epoch's metrics."""
        t0 = time.time()
        record: dict[str, Any] = {"epoch": epoch + 1, "method": self.cfg.method,
                                  "lr": self.optimizer.param_groups[0]["lr"]}
        self._sync_buffers()
        with channels_last_inputs(self.module, self.nhwc_inputs):
            pool = self._mine(epoch, record)
            steps, batches = self._batches(epoch, pool)
            sums: dict[str, torch.Tensor] = {}
            correct = torch.zeros((), device=self.device)
            seen = 0
            bar = progress(batches, self.cfg.progress and self.main, total=steps,
                           desc=f"{self.cfg.method} epoch {epoch + 1}/{self.cfg.epochs}")
            for i, (b_in, b_out) in enumerate(bar):
                parts, hits, n_in = self._train_step(b_in, b_out, epoch, i + 1)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v * n_in
                correct += hits
                seen += n_in
                if (i + 1) % self.cfg.log_every == 0:  # one host sync every log_every steps
                    self._check_finite(parts["loss"], epoch, i + 1, bar)
            if hasattr(bar, "close"):
                bar.close()
        self.scheduler.step()
        self._reduce_metrics(record, sums, correct, seen, epoch, steps)
        record["seconds"] = round(time.time() - t0, 3)
        return record

    def _mine(self, epoch: int, record: dict[str, Any]) -> torch.Tensor:
        """This epoch's outlier pool: the mined window (ATOM/NTOM) or the whole aux set."""
        if self.miner is None:
            return torch.arange(len(self.aux_set))
        mined = self.miner.mine(self.module, epoch, device=self.device)
        record["mining"] = {k: mined.record[k] for k in ("candidate_mean", "window_low", "window_high",
                                                         "selected_mean")}
        return mined.indices

    def _batches(self, epoch: int, pool: torch.Tensor):
        """``(steps, zip(ID batches, outlier batches))`` of the epoch (seeded loaders)."""
        cfg = self.cfg
        id_idx = self._id_indices(epoch)
        steps = int(math.ceil(len(id_idx) / cfg.batch_size))
        id_loader = self._loader(self.train_set, id_idx, cfg.batch_size, _seeded(cfg.seed, epoch, 3))
        out_loader = self._loader(self.aux_set, self._outlier_indices(epoch, pool, steps), cfg.outlier_batch_size,
                                  _seeded(cfg.seed, epoch, 4))
        return steps, zip(id_loader, out_loader)

    def _train_step(self, b_in, b_out, epoch: int, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """Attack (eval mode, frozen weights), one train-mode forward, loss, SGD step.
        Returns the loss parts, the number of correct ID predictions (a device tensor)
        and the ID batch size."""
        x_in, y_in = split_batch(b_in, "train_set")
        x_out, _ = split_batch(b_out, "aux_set")
        self._check_host_batch(x_in, y_in, x_out, epoch, step)  # before the copy: no device sync
        x_in, y_in, x_out = self._to_device(x_in), y_in.to(self.device, non_blocking=True), self._to_device(x_out)
        n_in = x_in.shape[0]
        self.module.eval()
        with self._autocast(), _frozen(self.params):
            x_in, x_out = self.recipe.perturb(self.module, x_in, y_in, x_out)
        self.module.train()
        with self._autocast():
            logits = self.model(torch.cat([x_in, x_out], 0))
        loss, parts = self.recipe.loss(logits[:n_in], y_in, logits[n_in:])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        hits = (logits[:n_in, : self.k].detach().argmax(1) == y_in).sum()
        return parts, hits, n_in

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int, bar) -> None:
        cur = float(loss)
        if not math.isfinite(cur):
            raise self._diverged(epoch, step)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{cur:.3f}")

    def _reduce_metrics(self, record: dict[str, Any], sums: dict[str, torch.Tensor], correct: torch.Tensor,
                        seen: int, epoch: int, steps: int) -> None:
        """Epoch means of the loss parts and the train accuracy (summed over ranks)."""
        stats = torch.stack([sums[k] for k in sorted(sums)] + [correct, torch.tensor(float(seen), device=self.device)])
        if dist_utils.is_distributed():
            stats = dist_utils.all_gather_cat(stats.unsqueeze(0).to(collective_device(self.device))).sum(0)
        stats = stats.cpu().tolist()
        total_seen = stats[-1]
        for k, v in zip(sorted(sums), stats[:-2]):
            record[k] = v / total_seen
        record["train_acc"] = stats[-2] / total_seen
        if not all(math.isfinite(record[k]) for k in sums):
            raise self._diverged(epoch, steps)

    def fit(self) -> list[dict[str, Any]]:  # noqa: C901
        """Train from the current epoch to ``config.epochs``; returns the per-epoch metrics."""
        cfg = self.cfg
        if self.main and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if cfg.tensorboard and self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    raise ImportError("tensorboard=True needs the tensorboard package: "
                                      "pip install atom_plugin[tensorboard]") from err
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        try:
            while self.epoch < cfg.epochs:
                record = self.train_epoch(self.epoch)
                self._sync_buffers()
                self.epoch += 1
                self.history.append(record)
                self.save()
                if self.out_dir is not None and cfg.keep_checkpoints and self.epoch % cfg.keep_checkpoints == 0:
                    self.save(self.out_dir / f"epoch_{self.epoch:04d}.pt")  # collective under DDP
                if self.main and self.out_dir is not None:
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    if self.miner is not None:
                        with open(self.out_dir / "mining.json", "w") as f:
                            json.dump(self.miner.history, f)
                    if self._tb is not None:
                        for k, v in record.items():
                            if isinstance(v, (int, float)) and k != "epoch":
                                self._tb.add_scalar(f"train/{k}", v, self.epoch)
                if cfg.progress and self.main:
                    msg = " ".join(f"{k}={record[k]:.4g}" for k in ("loss", "loss_in", "loss_out", "train_acc")
                                   if k in record)
                    print(f"[{cfg.method}] epoch {self.epoch}/{cfg.epochs} {msg} ({record['seconds']:.1f}s)",
                          flush=True)
        finally:
            if self._tb is not None:
                self._tb.flush()
        self.module.eval()
        return self.history


def train(model: nn.Module, train_set: Dataset, aux_set: Dataset, config: TrainConfig | None = None, *,
          num_classes: int | None = None, out_dir: str | Path | None = None, device=None,
          resume: bool | str | Path = False, overwrite: bool = False, **overrides) -> nn.Module:
    """Train ``model`` in place and return it (in eval mode).

    ``overrides`` replace fields of ``config`` (e.g. ``method="oe", epochs=10``).
    See :class:`Trainer` for the arguments.
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    Trainer(model, train_set, aux_set, config, num_classes=num_classes, out_dir=out_dir, device=device,
            resume=resume, overwrite=overwrite).fit()
    return model
