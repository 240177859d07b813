"""Checkpoints: atomic writes, ``weights_only`` loads, a payload checksum, RNG state
capture/restore, and the out-dir rule.

A checkpoint is a ``dict`` of tensors and plain Python values only (no pickled
objects), so :func:`load_checkpoint` can use ``torch.load(..., weights_only=True)``.
It is written to a temporary file in the target directory, flushed and fsync'ed, then
moved into place with ``os.replace``: a crash never leaves a half-written checkpoint
(a leftover ``.last.pt.*.tmp`` from a killed save is removed by :func:`prepare_out_dir`
on the next start, and by the next successful save of the same file).

**Checksum.**  ``torch.load`` does not check the zip CRCs, so a flipped byte inside a
tensor loads silently.  :func:`save_checkpoint` stores ``state["checksum"] =
"sha256:<hex>"``, a SHA-256 over every tensor's bytes (with dtype and shape) and every
plain value, in order; :func:`load_checkpoint` recomputes it and refuses a mismatch.
Checkpoints without the key (written before it existed) load unchecked.

**Out-dir rule** (:func:`prepare_out_dir`, run before the first epoch): ``out_dir`` must
be a directory (created if missing) that can be written; a directory that already
holds a run (``last.pt`` / ``metrics.jsonl``) is refused unless the run is resumed or
``overwrite=True`` (which deletes the old run's files first).
"""
from __future__ import annotations

import glob
import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "FORMAT", "payload_checksum",
           "prepare_out_dir", "RUN_FILES"]

FORMAT = "atom_plugin.training/1"
CHECKSUM_KEY = "checksum"
#: files of a run in its out dir (``epoch_XXXX.pt`` and ``tensorboard/`` too)
RUN_FILES = ("last.pt", "metrics.jsonl", "mining.json")


# --------------------------------------------------------------------------- checksum
def _feed(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        t = t.cpu().contiguous().reshape(-1)
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        h.update(b"D%d" % len(value))
        for k, v in value.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, (list, tuple)):
        h.update((b"L" if isinstance(value, list) else b"U") + b"%d" % len(value))
        for v in value:
            _feed(h, v)
    elif isinstance(value, (bytes, bytearray)):
        h.update(b"B%d" % len(value) + bytes(value))
    else:  # str, int, float, bool, None, torch.dtype/device ...: repr is exact for these
        r = repr(value).encode()
        h.update(b"V%d" % len(r) + r)


def payload_checksum(state: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` over ``state`` without its ``"checksum"`` entry (order-sensitive)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------- save / load
def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, *, checksum: bool = True) -> Path:
    """Write ``state`` atomically to ``path`` (parent directories are created), with a
    payload checksum unless ``checksum=False``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot write the checkpoint {path}: {path.parent} (or a parent) is a file, not a "
                         "directory; choose another out_dir.") from None
    if path.is_dir():
        raise ValueError(f"cannot write the checkpoint {path}: it is a directory; remove it or choose another out_dir.")
    if checksum:
        state = {**state, CHECKSUM_KEY: payload_checksum(state)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed save
            try:
                stale.unlink()
            except OSError:
                pass
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_FIX = ("delete it and start a fresh run, or resume from an intact checkpoint (e.g. an epoch_XXXX.pt kept "
        "with keep_checkpoints / --keep-checkpoints)")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu", *,
                    verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one sentence naming
    the file and the fix) for an empty, truncated, corrupt or foreign file, or when the
    stored payload checksum does not match (``verify=False`` skips that check).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file; pass <out_dir>/last.pt or resume=True.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; check the path (the trainer writes <out_dir>/last.pt).")
    if path.stat().st_size == 0:
        raise ValueError(f"The checkpoint {path} is empty (0 bytes, e.g. from a full disk); {_FIX}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, OSError, ...
        raise ValueError(
            f"The checkpoint {path} cannot be read (truncated, corrupt or not a torch file; torch.load raised "
            f"{type(err).__name__}); {_FIX}."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an atom_plugin training checkpoint (format {FORMAT!r}); pass a last.pt "
                         "written by atom_plugin.train / atom-ood train.")
    stored = state.get(CHECKSUM_KEY)
    if verify and stored is not None:
        if payload_checksum(state) != stored:
            raise ValueError(f"The checkpoint {path} is corrupt: its payload checksum does not match the one stored "
                             f"when it was saved; {_FIX}.")
    state.pop(CHECKSUM_KEY, None)
    return state


# --------------------------------------------------------------------------- out dir
def _is_run_file(p: Path) -> bool:
    return p.name in RUN_FILES or (p.name.startswith("epoch_") and p.name.endswith(".pt"))


def prepare_out_dir(out_dir: str | os.PathLike, *, resume: bool | str | os.PathLike = False,
                    overwrite: bool = False, main: bool = True) -> Path:
    """Check and prepare a training output directory before the first epoch.

    * ``out_dir`` (or a parent) that is a file, or a directory that cannot be written,
      raises ``ValueError`` naming it;
    * ``out_dir/last.pt`` that is a directory raises ``ValueError``;
    * leftover ``.*.pt.*.tmp`` files from a killed save are removed;
    * a directory holding a previous run (``last.pt`` or a non-empty ``metrics.jsonl``) is
      refused unless ``resume`` is set (the run continues) or ``overwrite=True`` (the old
      run's ``last.pt``, ``metrics.jsonl``, ``mining.json``, ``epoch_XXXX.pt`` and
      ``tensorboard/`` are deleted).

    ``main=False`` (other DDP ranks) only checks; it never creates or deletes anything.
    Returns ``Path(out_dir)``.
    """
    if isinstance(out_dir, bool) or not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"`out_dir` must be a path (str or os.PathLike), got {type(out_dir).__name__}.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False, got {overwrite!r}.")
    out = Path(out_dir)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under the file {parent}"
            raise ValueError(f"`out_dir` {out} {where}, not a directory; choose another out_dir.")
        if parent.exists():
            break
    last = out / "last.pt"
    if last.is_dir():
        raise ValueError(f"`out_dir` {out} holds a directory named last.pt (the checkpoint's name); remove it or "
                         "choose another out_dir.")
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=out)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise ValueError(f"`out_dir` {out} cannot be written ({err.strerror or type(err).__name__}); "
                             "choose a writable directory.") from None
        for tmp in out.glob(".*.pt.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass
    elif out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"`out_dir` {out} cannot be written (permission denied); choose a writable directory.")
    metrics = out / "metrics.jsonl"
    used = last.is_file() or (metrics.is_file() and metrics.stat().st_size > 0)
    if used and not resume:
        if not overwrite:
            raise ValueError(
                f"`out_dir` {out} already holds a training run ({'last.pt' if last.is_file() else 'metrics.jsonl'}); "
                "pass resume=True (--resume) to continue it, overwrite=True (--overwrite) to replace it, or choose "
                "a new out_dir."
            )
        if main:
            for p in out.iterdir():
                if p.is_file() and _is_run_file(p):
                    p.unlink()
            if (out / "tensorboard").is_dir():
                shutil.rmtree(out / "tensorboard")
    return out


# --------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python ``random`` global RNG states, as tensors
    and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
