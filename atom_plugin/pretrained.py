"""Offline model loading: timm models with local weights, RobustBench models from ``model_dir``.

Nothing here downloads.  Checkpoints are read without unpickling arbitrary objects:
``.safetensors`` with safetensors, everything else with ``torch.load(weights_only=True)``.

* :func:`create_timm_model` builds any timm architecture, loads a local checkpoint through
  timm's own pretrained-weights path (so timm's checkpoint filters and head handling
  apply), wraps it in :class:`~atom_plugin.models.Normalize` with the model's mean/std,
  and optionally adds ``num_reject`` reject classes.
* :func:`load_robustbench_model` loads a RobustBench model zoo entry from
  ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` and refuses (instead of fetching from
  Google Drive / the Hugging Face hub) when the file is missing.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ._validation import check_int
from .models import Normalize, with_reject_head

__all__ = ["create_timm_model", "load_robustbench_model", "load_weights_only", "read_state_dict",
           "robustbench_checkpoint_path", "load_checkpoint_model"]


def load_weights_only(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a file that carries code
    or is not a torch file raises ``ValueError`` saying so (nothing is unpickled)."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a checkpoint file; pass the file (e.g. <out>/last.pt).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file; check the path.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes); re-save or re-copy the checkpoint.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for disallowed globals, RuntimeError/EOFError/OSError for bad files
        raise ValueError(
            f"{path} could not be read as a weights-only checkpoint ({type(err).__name__}: {str(err)[:200]}). "
            "Save plain state dicts (torch.save(model.state_dict(), path)) or .safetensors files."
        ) from None


def read_state_dict(path: str) -> dict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, without running pickled code.

    ``.safetensors`` files are read with safetensors; others with
    ``torch.load(map_location="cpu", weights_only=True)``.  Wrappers ``{"state_dict_ema":
    ...}``, ``{"model_ema": ...}``, ``{"state_dict": ...}``, ``{"model": ...}`` are unwrapped
    (in that order, as timm does) and a ``module.`` prefix (DataParallel) is removed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path} (`checkpoint` must be an existing local file).")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError("reading .safetensors checkpoints needs `pip install safetensors`.") from None
        ckpt: Any = load_file(path, device="cpu")
    else:
        ckpt = load_weights_only(path)
    if isinstance(ckpt, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(ckpt).__name__}).")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt.items()}


def _check_weights_only(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` loads with ``torch.load(weights_only=True)``."""
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # cheap: nothing read yet
        except RuntimeError:
            torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:
        raise ValueError(
            f"{path} is not a weights-only checkpoint ({type(err).__name__}: {str(err)[:200]}); refusing to "
            "unpickle it. Re-save it as a plain state dict."
        ) from None


def _classifier_names(name: str) -> tuple:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    clf = getattr(cfg, "classifier", None) if cfg is not None else None
    if clf is None:
        return ()
    return (clf,) if isinstance(clf, str) else tuple(clf)


class _SharedStateDict(dict):
    """A state dict that timm's config handling (``dataclasses.asdict`` deep copies) does not copy."""

    def __deepcopy__(self, memo):
        return self


def _timm_from_state_dict(name: str, state_dict: dict, num_classes: int, **kwargs) -> nn.Module:
    """``timm.create_model`` with weights from an in-memory state dict (no network)."""
    import timm

    heads = _classifier_names(name)
    rows = next((state_dict[h + ".weight"].shape[0] for h in heads if h + ".weight" in state_dict), None)
    # `state_dict` is timm's highest-priority pretrained source; `source=""` keeps it off the HF hub.
    # `num_classes` = the checkpoint's head size: timm keeps the head if it matches the requested
    # num_classes and drops it (new random head) otherwise.
    # (-1 when the checkpoint has no head: never matches, so timm loads non-strictly.)
    overlay = dict(state_dict=_SharedStateDict(state_dict), source="", num_classes=-1 if rows is None else rows)
    model = timm.create_model(name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs)
    for cfg in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                if isinstance(c, dict)}.values():
        cfg.pop("state_dict", None)  # do not keep a second copy of the weights alive
    # Parameters the checkpoint does not name (matching suffixes too: some factories wrap the model).
    head_keys = {h + s for h in heads for s in (".weight", ".bias")}
    own = [k for k, _ in model.named_parameters()]
    parts = (k.split(".") for k in own)
    missing = [k for k, p in zip(own, parts)
               if not any(".".join(p[i:]) in state_dict or ".".join(p[i:]) in head_keys for i in range(len(p)))]
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(own)} parameters of {name} have no same-named entry in the checkpoint (first: "
            f"{missing[:3]}); they were filled by timm's checkpoint filter or left at their initialisation.",
            stacklevel=3,
        )
    return model


def create_timm_model(name: str, num_classes: int, checkpoint: Optional[str] = None, num_reject: int = 0,
                      normalize: bool = True, mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None, input_size: Any = None, **kwargs: Any) -> nn.Module:
    """Build timm model ``name`` with ``num_classes`` (+ ``num_reject``) outputs, offline.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``"resnet18"``, ``"test_vit"``.
        num_classes: ``K``, the in-distribution classes.
        checkpoint: a local ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict (timm,
            ``torch.save(model.state_dict())``, or wrapped as ``{"state_dict": ...}``).  Its
            classifier is kept when it has ``K`` rows (or ``K + num_reject`` rows: then the
            whole K+R head is restored); otherwise the head is newly initialised and the
            backbone loaded.  ``None``: random initialisation (this function never downloads).
        num_reject: ``R`` extra reject classes (:func:`~atom_plugin.models.with_reject_head`).
        normalize: wrap in :class:`~atom_plugin.models.Normalize` so the model takes
            images in ``[0, 1]``; ``mean``/``std`` default to the model's ``pretrained_cfg``.
        input_size: resize inputs to this size inside the wrapper (``int``, ``(H, W)`` or
            ``"pretrained"`` for the checkpoint's resolution, e.g. 224): the
            pretrained-resolution path for a ViT on 32x32 images.  Building a ViT with
            ``img_size=32`` instead resamples its 14x14 position embedding to 2x2 tokens
            (a warning says so when a checkpoint is loaded).
        **kwargs: passed to ``timm.create_model`` (e.g. ``img_size=32``, ``drop_rate``).

    Distilled models (``deit_*_distilled_*``, two heads ``head``/``head_dist``) get both
    heads resized; their eval-mode output is the mean of the two.

    Returns:
        the model in eval mode, logits ``(B, K + R)``; ``ood_num_classes``/``ood_num_reject``
        are set when ``R > 0``.
    """
    import timm

    check_int(num_classes, "num_classes", low=1)
    check_int(num_reject, "num_reject", low=0)
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(f"`name`={name!r} is not a timm model name; see timm.list_models().")
    if kwargs.pop("pretrained", False):
        raise ValueError("`pretrained=True` would download weights; pass a local file as `checkpoint` instead.")
    total = num_classes + num_reject
    head_loaded = False
    if checkpoint is None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    else:
        sd = read_state_dict(checkpoint)
        heads = _classifier_names(name)
        rows = next((sd[h + ".weight"].shape[0] for h in heads if h + ".weight" in sd), None)
        head_loaded = num_reject > 0 and rows == total
        model = _timm_from_state_dict(name, sd, total if head_loaded else num_classes, **kwargs)
        model.pretrained_cfg["file"] = os.fspath(checkpoint)
        del sd
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if isinstance(input_size, str):
        if input_size != "pretrained":
            raise ValueError(f"`input_size` must be an int, (H, W) or 'pretrained', got {input_size!r}.")
        input_size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    _warn_tiny_grid(name, model, cfg, checkpoint, kwargs, input_size)
    if normalize:
        from ._validation import expected_channels

        chans = expected_channels(model)
        given = mean is not None or std is not None
        mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406))) if mean is None else tuple(mean)
        std = tuple(cfg.get("std", (0.229, 0.224, 0.225))) if std is None else tuple(std)
        if chans is not None and len(mean) not in (1, chans):
            if given:
                raise ValueError(f"`mean`/`std` have {len(mean)} values but {name} takes {chans} input channels; "
                                 f"pass {chans} values (one per channel).")
            # timm's per-channel statistics for an in_chans != 3 model: one value per channel
            mean = tuple(sum(mean) / len(mean) for _ in range(chans)) if chans == 1 else (mean * chans)[:chans]
            std = tuple(sum(std) / len(std) for _ in range(chans)) if chans == 1 else (std * chans)[:chans]
        model = Normalize(model, mean, std, input_size=input_size)
    elif mean is not None or std is not None or input_size is not None:
        raise ValueError("`mean`/`std`/`input_size` are only used with `normalize=True`.")
    if head_loaded:
        model.ood_num_classes, model.ood_num_reject = num_classes, num_reject
    elif num_reject > 0:
        model = with_reject_head(model, num_classes, num_reject)
    return model.eval()


def _warn_tiny_grid(name: str, model: nn.Module, cfg: dict, checkpoint, kwargs: dict, input_size) -> None:
    """Warn when a pretrained ViT-style model was built at a resolution that shrinks its token grid."""
    patch = getattr(model, "patch_embed", None)
    grid = getattr(patch, "grid_size", None)
    pre = cfg.get("input_size")
    if checkpoint is None or "img_size" not in kwargs or grid is None or not pre or input_size is not None:
        return
    ps = getattr(patch, "patch_size", None)
    ps = ps if isinstance(ps, (tuple, list)) else (ps, ps)
    try:
        pre_grid = (pre[-2] // ps[0], pre[-1] // ps[1])
    except TypeError:
        return
    if tuple(grid) != tuple(pre_grid):
        warnings.warn(
            f"{name} was built with img_size={kwargs['img_size']!r}: its position embedding was resampled from "
            f"{pre_grid[0]}x{pre_grid[1]} to {grid[0]}x{grid[1]} tokens. To use the pretrained resolution, omit "
            f"img_size and pass input_size='pretrained' (inputs resized to {pre[-2]}x{pre[-1]} inside the wrapper).",
            stacklevel=3,
        )


def robustbench_checkpoint_path(name: str, model_dir: str, dataset: str = "cifar10",
                                threat_model: str = "Linf") -> str:
    """Where RobustBench (and :func:`load_robustbench_model`) expects the weights of ``name``."""
    return os.path.join(os.fspath(model_dir), dataset, threat_model, f"{name}.pt")


def load_robustbench_model(name: str, model_dir: str = "./models", dataset: str = "cifar10",
                           threat_model: str = "Linf", num_reject: int = 0) -> nn.Module:
    """A RobustBench model zoo entry from local weights, optionally with reject classes.

    The checkpoint must already be at ``<model_dir>/<dataset>/<threat_model>/<name>.pt``
    (ensembles: ``<name>.pt_m0.pt``, ``<name>.pt_m1.pt``, ...); RobustBench itself would
    download it from Google Drive, this function raises ``FileNotFoundError`` instead.
    Entries RobustBench routes to timm (e.g. ``Debenedetti2022Light_XCiT-S12``) are read
    from the same path and built through timm without the Hugging Face hub.  ImageNet
    ``Standard_*`` entries, which RobustBench builds from torchvision downloads, are refused.

    The checkpoint is checked with ``torch.load(weights_only=True)`` before RobustBench
    loads it.  RobustBench models take images in ``[0, 1]`` (normalization inside).

    Returns:
        the model in eval mode with ``K`` (+ ``num_reject``) logits, ``K`` = 10/100/1000.
    """
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        from robustbench.utils import DATASET_CLASSES
    except Exception as err:  # ImportError, or AttributeError/NameError from the stale copy torchattacks installs
        from ._compat import MissingDependencyError

        raise MissingDependencyError(
            f"load_robustbench_model needs robustbench 1.1.1 (the `robustbench` package found is missing or unusable, "
            f"e.g. the old copy the torchattacks wheel installs: {type(err).__name__}: {str(err)[:120]}); "
            "pip install 'atom_plugin[robustbench]'."
        ) from None
    import timm

    check_int(num_reject, "num_reject", low=0)
    try:
        ds = BenchmarkDataset(dataset)
    except ValueError:
        raise ValueError(f"`dataset` must be one of {[d.value for d in BenchmarkDataset]}, got {dataset!r}.") from None
    try:
        tm = ThreatModel(ThreatModel(threat_model).value.replace("_3d", ""))
    except ValueError:
        raise ValueError(f"`threat_model` must be one of {[t.value for t in ThreatModel]}, got {threat_model!r}.") from None
    zoo = model_dicts[ds].get(tm, {})
    if name not in zoo:
        raise ValueError(
            f"`name`={name!r} is not a RobustBench {ds.value}/{tm.value} model; available e.g. {list(zoo)[:5]}."
        )
    path = robustbench_checkpoint_path(name, model_dir, ds.value, tm.value)
    num_classes = DATASET_CLASSES[ds]
    entry = zoo[name]
    timm_name = f"{name.lower().replace('-', '_')}_{ds.value.lower()}_{tm.value.lower()}"

    if timm.is_model(timm_name):
        model = _robustbench_timm(name, timm_name, path, num_classes)
    elif ds == BenchmarkDataset.imagenet and "Standard" in name:
        raise ValueError(
            f"RobustBench builds {name!r} from torchvision's downloaded weights; use create_timm_model(...) or "
            "torchvision with a local checkpoint instead."
        )
    else:
        gid = entry["gdrive_id"]
        paths = [path] if not isinstance(gid, list) else [f"{path}_m{i}.pt" for i in range(len(gid))]
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(
                    f"RobustBench model {name!r} not found at {p}. This library never downloads (RobustBench would "
                    f"fetch it from Google Drive); on a machine with internet run robustbench.utils.load_model("
                    f"{name!r}, model_dir=..., dataset={ds.value!r}, threat_model={tm.value!r}) and copy the file "
                    f"to {p}.")
            _check_weights_only(p)  # before robustbench unpickles it
        from robustbench.utils import load_model

        model = load_model(name, model_dir=os.fspath(model_dir), dataset=ds.value, threat_model=tm.value)
    if num_reject > 0:
        model = with_reject_head(model, num_classes, num_reject)
    model.ood_normalizes_inputs = True  # takes [0, 1]; Normalize(model, ...) would normalize twice
    return model.eval()


def _robustbench_timm(name: str, timm_name: str, path: str, num_classes: int) -> nn.Module:
    """A RobustBench entry that RobustBench routes to timm, from the local ``path``."""
    if not os.path.isfile(path):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(timm_name)
        url = (getattr(cfg, "url", None) or getattr(cfg, "hf_hub_id", None)) if cfg else None
        raise FileNotFoundError(
            f"RobustBench model {name!r} (timm model {timm_name!r}) not found at {path}. This library never "
            f"downloads; save its state dict (from {url or 'the RobustBench model zoo'}) as {path}."
        )
    sd = read_state_dict(path)
    if any(k.startswith("model.") for k in sd):  # saved from RobustBench's normalizing wrapper
        sd = {k[6:]: v for k, v in sd.items() if k.startswith("model.")}
    return _timm_from_state_dict(timm_name, sd, num_classes)


# ------------------------------------------------------------------ own checkpoints
def _strip_prefix(sd: dict, prefix: str) -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _model_from_state(sd: dict, k: int | None, r: int | None, arch: str | None):
    """Rebuild a model from a state dict: Normalize(SmallCNN) inferred, or a timm arch."""
    from .models import SmallCNN

    sd = _strip_prefix(_strip_prefix(sd, "module."), "_orig_mod.")
    has_norm = "mean" in sd and "std" in sd
    inner = {kk[len("model."):]: v for kk, v in sd.items() if kk.startswith("model.")} if has_norm else sd
    if arch in (None, "smallcnn"):
        if "features.0.weight" not in inner or "fc.weight" not in inner:
            raise ValueError(
                "the weights are not a SmallCNN's (no features.0.weight / fc.weight); pass `arch` (--arch) "
                "with the timm architecture name, or load them with create_timm_model (--timm NAME --weights FILE)."
            )
        w = inner["features.0.weight"]
        total = inner["fc.weight"].shape[0]
        model: nn.Module = SmallCNN(total, in_chans=w.shape[1], width=w.shape[0])
    else:
        import timm

        if not timm.is_model(arch):
            raise ValueError(f"`arch` (--arch) {arch!r} is neither 'smallcnn' nor a timm model name.")
        if k is None or r is None:
            raise ValueError(f"with arch {arch!r} pass num_classes K and num_reject R (--num-classes/--num-reject; R=0 for K-way).")
        total = k + r
        model = timm.create_model(arch, pretrained=False, num_classes=total)
    if has_norm:
        c = sd["mean"].numel()
        model = Normalize(model, [0.0] * c, [1.0] * c)
    try:
        missing, unexpected = model.load_state_dict(sd if has_norm else inner, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)[:200]
        raise ValueError(f"the weights do not fit the model ({first.strip()}); pass the right `arch` (--arch), "
                         "`num_classes` and `num_reject`.") from None
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    if k is None:
        if r is None:
            raise ValueError("the checkpoint does not say K; pass num_classes K (--num-classes) and num_reject R.")
        k = total - r
    r = total - k if r is None else r
    if k + r != total or k < 1 or r < 0:
        raise ValueError(f"num_classes {k} / num_reject {r} do not match the model's {total} outputs.")
    model.ood_num_classes, model.ood_num_reject = k, r
    return model.eval(), k


def load_checkpoint_model(path: str, num_classes: int | None = None, num_reject: int | None = None,
                          arch: str | None = None) -> tuple[nn.Module, int]:
    """Rebuild the model of a checkpoint written by ``atom-ood train`` (or a bare state dict of
    a :class:`~atom_plugin.models.SmallCNN`, or of a timm ``arch``), weights-only.

    Returns ``(model in eval mode, K)``; ``model.ood_num_classes`` / ``ood_num_reject`` are set.
    ``num_classes`` / ``num_reject`` / ``arch`` fill in what the checkpoint does not record.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory; pass the checkpoint file (e.g. {os.path.join(path, 'last.pt')!r}).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such checkpoint file.")
    state = load_weights_only(path)
    if isinstance(state, dict) and "checksum" in state and isinstance(state.get("model"), dict):
        from .training.checkpoint import payload_checksum

        if payload_checksum(state) != state["checksum"]:
            raise ValueError(f"{path!r} is corrupt: its payload checksum does not match the one stored when it was "
                             "saved; use an intact copy (e.g. an epoch_XXXX.pt) or retrain.")
    if not isinstance(state, dict):
        raise ValueError(f"{path!r}: expected a dict (state_dict or training checkpoint).")
    k, r = num_classes, num_reject
    if isinstance(state.get("model"), dict):  # atom_plugin.training checkpoint
        k = state.get("num_classes", k) if k is None else k
        r = state.get("num_reject", r) if r is None else r
        spec = state.get("arch") or (state.get("config") or {}).get("arch")
        if arch is None and isinstance(spec, str):
            arch = spec
        sd = state["model"]
    else:
        sd = state.get("state_dict", state)
    return _model_from_state(sd, k, r, arch)
