"""Running attacks and scoring batches inside the evaluation (and ``atom-ood attack``).

* :func:`batch_seed` / :func:`seeded`: the per-(seed, set, task, batch) RNG discipline that
  makes results reproducible and independent of the number of processes;
* :func:`run_attack`: one attack call under its seed, with the output checked;
* :class:`Scorer`: scores and class logits through the detector's bare methods (the batch
  was validated once at entry);
* :func:`to_uint8`: images for the example figure.
"""
from __future__ import annotations

import random
import zlib
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["batch_seed", "seeded", "reseed", "run_attack", "attack_scores", "Scorer", "to_uint8"]


def batch_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed derived from ``seed`` and names/indices ``parts`` (CRC32, stable)."""
    return zlib.crc32("/".join(map(str, (seed,) + parts)).encode()) & 0x7FFFFFFF


@contextmanager
def seeded(s: int, device: torch.device):
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


def reseed(atk: Any, seed: int) -> None:
    """Give ``atk`` (and the attacks inside it: a compositional attack's L∞ attack, an
    ensemble's components) the seed ``seed``, where they were built with one.  Attacks with
    a seed draw per image (``attacks.base.image_seed``), so an image's random starts do not
    depend on the rest of the batch or on early stopping; attacks built with ``seed=None``
    keep drawing from the global RNG that :func:`seeded` sets."""
    from ..attacks import OODAttack

    if isinstance(atk, OODAttack) and atk.seed is not None:
        atk.seed = int(seed)
    subs = [getattr(atk, "linf_attack", None)] + list((getattr(atk, "components", None) or {}).values())
    for sub in subs:
        if sub is not None and sub is not atk:
            reseed(sub, seed)


def run_attack(atk: Callable | None, x: torch.Tensor, seed: int, **kwargs: Any) -> torch.Tensor:
    """``atk(x, **kwargs)`` under :func:`seeded` (``x`` itself when ``atk`` is ``None``), detached;
    a seeded attack is first re-seeded with ``seed`` (:func:`reseed`)."""
    if atk is None:
        return x
    reseed(atk, seed)
    with seeded(seed, x.device):
        adv = atk(x, **kwargs)
    if not isinstance(adv, torch.Tensor) or adv.shape != x.shape:
        raise ValueError(
            f"attack {type(atk).__name__} must return a tensor shaped like its input {tuple(x.shape)}, "
            f"got {getattr(adv, 'shape', type(adv).__name__)}."
        )
    return adv.detach()


class Scorer:
    """Score / classify batches through the detector's bare methods.  A detector that
    declares ``needs_input_grad`` (its score differentiates w.r.t. the input) is called
    with gradients enabled, every other one under ``torch.no_grad``."""

    def __init__(self, detector) -> None:
        self.det = detector
        self.need_grad = bool(getattr(detector, "needs_input_grad", False))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.need_grad):
            return self.det._score(x).detach()

    def score_np(self, x: torch.Tensor) -> np.ndarray:
        return self.score(x).cpu().numpy().astype(np.float64)

    def classify(self, x: torch.Tensor) -> torch.Tensor | None:
        with torch.no_grad():
            try:
                return self.det._classify(x)
            except NotImplementedError:
                return None


def attack_scores(atk: Any, x: torch.Tensor) -> torch.Tensor | None:
    """The OOD scores of its output that an attack computed itself (``last_scores`` /
    ``last_score``, shape ``(B,)``, target ``"ood"``), so the evaluation need not re-score
    them; ``None`` when the attack does not say."""
    if atk is None or getattr(atk, "target", "ood") != "ood":
        return None
    s = getattr(atk, "last_scores", None)
    if s is None:
        s = getattr(atk, "last_score", None)
    if isinstance(s, torch.Tensor) and s.shape == (x.shape[0],) and s.device == x.device:
        return s.detach()
    return None


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
