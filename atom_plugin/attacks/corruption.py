"""Black-box corruption attack (ATOM paper, Section 5.1 and Appendix B.4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..corruptions import BACKENDS, CORRUPTIONS
from ..corruptions._common import make_generator, seed_to_int
from ..corruptions.registry import check_corruption, check_severity, check_size
from ..corruptions.tables import check_table, resolve_table, table_params
from .._validation import check_choice, check_int, check_scores
from .base import OODAttack
from .registry import register_attack

__all__ = ["CorruptionAttack", "CorruptionResult"]


@dataclass
class CorruptionResult:
    """What one :class:`CorruptionAttack` search found, per image, best first.

    Attributes:
        images: ``(B, k, C, H, W)`` the k best candidates (a candidate may be the clean image).
        index: ``(B, k)`` long, index into ``candidates`` (-1 = the clean image).
        scores: ``(B, k)`` the detector's OOD scores of ``images``.
        keys: ``(B, k)`` the signed scores the search minimized (``scores`` for target
            "ood", ``-scores`` for "in"); ascending along k.
        clean_scores: ``(B,)`` OOD scores of the clean images (scored once per search).
        candidates: the ``(corruption, severity)`` list ``index`` refers to.
        table: the severity table the search used (resolved, e.g. ``"cifar"``).
        target: ``"ood"`` or ``"in"``.
    """

    images: torch.Tensor
    index: torch.Tensor
    scores: torch.Tensor
    keys: torch.Tensor
    clean_scores: torch.Tensor
    candidates: tuple
    table: str
    target: str

    @property
    def k(self) -> int:
        return int(self.index.shape[1])

    def names(self, rank: int = 0) -> list[str]:
        """``"name/severity"`` (or ``"clean"``) of each image's candidate at ``rank``."""
        out = []
        for i in self.index[:, rank].tolist():
            out.append("clean" if i < 0 else f"{self.candidates[i][0]}/{self.candidates[i][1]}")
        return out


@register_attack("corruption", threat="corruption", gradient=False,
                 help="black-box: the most in-distribution of every corruption x severity")
class CorruptionAttack(OODAttack):
    r"""For every image, try every corruption x severity and keep the most in-distribution.

    Each image is corrupted with every ``(corruption, severity)`` pair (15 x 5 = 75
    candidates by default; pass ``corruptions=ALL_CORRUPTIONS`` for the 19 x 5 = 95 of the
    official code), all candidates are scored by the detector's OOD score (black box: only
    ``detector.score`` outputs, no gradients), and per image the candidate with the
    **lowest** score is returned (``target="in"``: the highest).  The clean image is a
    candidate too, so the score never gets worse than the clean input's.

    Memory: candidates are generated and scored one ``(corruption, severity)`` at a time
    for ``batch_size`` images at a time (default: the whole batch), keeping only the best
    ``top_k`` so far: peak memory is about ``top_k + 2`` batches of images plus the
    model's activations.

    Args:
        model: a Detector, or an ``nn.Module`` with ``objective`` (see ``OODAttack``).
        corruptions: corruption names (default the 15 common ones).
        severities: severities in 1..5 (default all five).
        backend: ``"torch"`` (batched, on the images' device) or ``"imagecorruptions"``.
        seed: seed of the random corruptions; the same seed gives the same output for the
            same input (every call starts from it).  ``None`` draws from torch's global RNG.
        batch_size: images per chunk (``None``: all at once).
        progress: show a tqdm bar over the candidates.
        target: ``"ood"`` (lowest score wins) or ``"in"`` (highest wins).
        table: severity constants, ``"auto"`` (by image size: longest side <= 32 ->
            ``"cifar"``, the CIFAR-10-C constants of the paper's code; <= 64 ->
            ``"tinyimagenet"``; else ``"imagenet"``), or one of those names.
        top_k: how many best candidates per image the search keeps in ``last_topk``
            (a :class:`CompositionalAttack` with ``top_k`` > 1 can start from them).

    After a call: ``last_winner`` (list of ``"name/severity"`` or ``"clean"`` per image),
    ``last_winner_index`` ``(B,)`` (index into ``candidates``, -1 = clean), ``last_scores``
    (= ``last_score``) and ``last_clean_score`` ``(B,)`` (OOD scores of the returned and
    of the clean images; the clean batch is scored once per search), ``last_topk`` (a
    :class:`CorruptionResult`, the ``top_k`` best candidates per image with their scores)
    and ``resolved_table``.  ``win_histogram()`` accumulates over calls.
    """

    def __init__(
        self,
        model: nn.Module,
        corruptions: Sequence[str] = CORRUPTIONS,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        backend: str = "torch",
        seed: int | None = 0,
        batch_size: int | None = None,
        progress: bool = False,
        objective: Callable | None = None,
        num_classes: int | None = None,
        target: str = "ood",
        table: str = "auto",
        top_k: int = 1,
    ) -> None:
        super().__init__("CorruptionAttack", model, objective, num_classes, target=target, seed=seed)
        if isinstance(corruptions, str):
            corruptions = (corruptions,)
        corruptions = tuple(check_corruption(c, "corruptions") for c in corruptions)
        severities = tuple(check_severity(s, "severities") for s in severities)
        if not corruptions or not severities:
            raise ValueError("`corruptions` and `severities` must not be empty.")
        if len(set(corruptions)) != len(corruptions) or len(set(severities)) != len(severities):
            raise ValueError("`corruptions` and `severities` must not contain duplicates.")
        self.corruptions, self.severities = corruptions, severities
        self.candidates = [(c, s) for c in corruptions for s in severities]
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.table = check_table(table)
        if self.backend == "imagecorruptions" and self.table not in ("auto", "imagenet"):
            resolve_table(self.table, 1, 1, self.backend)  # raises: the reference has only "imagenet"
        self.top_k = check_int(top_k, "top_k", low=1)
        self.resolved_table: str | None = None
        self.last_topk: CorruptionResult | None = None
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", low=1)
        self.progress = bool(progress)
        self._counts = torch.zeros(len(self.candidates) + 1, dtype=torch.long)
        self.last_winner: list[str] | None = None
        self.last_winner_index: torch.Tensor | None = None
        self.last_score: torch.Tensor | None = None
        self.last_clean_score: torch.Tensor | None = None

    # -- bookkeeping ----------------------------------------------------------------
    def candidate_name(self, index: int) -> str:
        """``"name/severity"`` of candidate ``index`` (``"clean"`` for -1)."""
        if index < 0:
            return "clean"
        c, s = self.candidates[index]
        return f"{c}/{s}"

    def win_histogram(self, by_severity: bool = False) -> dict:
        """Wins accumulated over calls: ``{corruption: count}`` (plus ``"clean"``), or
        ``{"name/severity": count}`` with ``by_severity``."""
        counts = self._counts.tolist()
        hist: dict = {}
        for i, n in enumerate(counts[1:]):
            key = self.candidate_name(i) if by_severity else self.candidates[i][0]
            hist[key] = hist.get(key, 0) + n
        hist["clean"] = counts[0]
        return hist

    def reset_histogram(self) -> None:
        self._counts.zero_()

    # -- core -----------------------------------------------------------------------
    @property
    def last_scores(self) -> torch.Tensor | None:
        """``(B,)`` OOD scores of the images the last call returned."""
        return self.last_score

    def _corrupt(self, x: torch.Tensor, name: str, severity: int, gen: torch.Generator,
                 table: str = "imagenet") -> torch.Tensor:
        if self.backend == "torch":
            from ..corruptions.torch_backend import corrupt_torch

            return corrupt_torch(x, name, severity, gen, table=table)
        from ..corruptions.reference import corrupt_reference

        return corrupt_reference(x, name, severity, seed_to_int(gen))

    def _resolve(self, x: torch.Tensor) -> str:
        """Validate the images for every candidate and resolve the table (one clear
        ValueError for a bad table, a table without a corruption, or too small images)."""
        H, W = x.shape[2], x.shape[3]
        if x.shape[1] not in (1, 3):
            raise ValueError(f"`images` must have 1 or 3 channels to be corrupted, got {x.shape[1]}.")
        table = resolve_table(self.table, H, W, self.backend)
        for name in self.corruptions:
            check_size(name, H, W, self.backend)
            for sev in self.severities:
                c = table_params(table, name, sev)
                if name == "pixelate" and (int(H * c) < 1 or int(W * c) < 1):
                    raise ValueError(f"`images` of size {H}x{W} are too small for 'pixelate' at severity {sev} "
                                     f"of table {table!r}; upsample the images first.")
        self.resolved_table = table
        return table

    def _key(self, x: torch.Tensor) -> torch.Tensor:
        """Signed score to minimize: score for target "ood", -score for "in"."""
        with torch.inference_mode():
            s = self.detector._score(x)
        return (s * self.sign).clone()

    @torch.no_grad()
    def top_candidates(self, x: torch.Tensor, k: int = 1, clean_key: torch.Tensor | None = None):
        """The ``k`` best candidates per image (clean included), best first.

        Returns ``(keys (B, k), images (B, k, C, H, W), index (B, k))`` with ``keys`` the
        signed scores (OOD score for target "ood"; lower is better) and ``index`` into
        ``candidates`` (-1 = clean).  ``x`` must already be validated; ``clean_key``
        ``(B,)``, the clean images' signed scores, saves scoring them again."""
        table = self._resolve(x)
        gen = make_generator(None if self.seed is None else self.seed, x.device)
        B = x.shape[0]
        bs = self.batch_size or B
        keys, imgs, idxs = [], [], []
        it = self.candidates
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(it) * ((B + bs - 1) // bs), desc="corruptions", leave=False)
        for start in range(0, B, bs):
            xc = x[start:start + bs]
            n = xc.shape[0]
            best_k = (self._key(xc) if clean_key is None else clean_key[start:start + bs]).unsqueeze(1)  # (n, 1)
            best_x = xc.unsqueeze(1).clone()                          # (n, 1, C, H, W)
            best_i = torch.full((n, 1), -1, dtype=torch.long, device=x.device)
            for ci, (name, sev) in enumerate(it):
                cand = self._corrupt(xc, name, sev, gen, table)
                kc = self._key(cand).unsqueeze(1)
                all_k = torch.cat([best_k, kc], 1)
                all_i = torch.cat([best_i, torch.full_like(best_i[:, :1], ci)], 1)
                if k == 1:
                    better = kc[:, 0] < best_k[:, 0]                  # ties keep the earlier one
                    best_k = torch.where(better.unsqueeze(1), kc, best_k)
                    best_i = torch.where(better.unsqueeze(1), all_i[:, 1:], best_i)
                    best_x = torch.where(better.view(-1, 1, 1, 1, 1), cand.unsqueeze(1), best_x)
                else:
                    all_x = torch.cat([best_x, cand.unsqueeze(1)], 1)
                    kk = min(k, all_k.shape[1])
                    order = torch.sort(all_k, dim=1, stable=True).indices[:, :kk]
                    best_k = all_k.gather(1, order)
                    best_i = all_i.gather(1, order)
                    best_x = all_x[torch.arange(n, device=x.device).unsqueeze(1), order]
                if bar is not None:
                    bar.update(1)
            keys.append(best_k)
            imgs.append(best_x)
            idxs.append(best_i)
        if bar is not None:
            bar.close()
        return torch.cat(keys), torch.cat(imgs), torch.cat(idxs)

    def _record(self, index: torch.Tensor, key: torch.Tensor, clean_key: torch.Tensor) -> None:
        self.last_winner_index = index.detach()
        self.last_score = (key * self.sign).detach()
        self.last_clean_score = (clean_key * self.sign).detach()
        idx = index.detach().cpu()
        self._counts += torch.bincount(idx + 1, minlength=len(self.candidates) + 1)
        self.last_winner = [self.candidate_name(i) for i in idx.tolist()]

    def search(self, images: torch.Tensor, k: int | None = None) -> CorruptionResult:
        """Run the search on validated ``images`` keeping the ``k`` (default ``top_k``)
        best candidates per image; records ``last_*`` and the histogram like a call."""
        k = self.top_k if k is None else check_int(k, "k", low=1)
        self._resolve(images)  # bad table / image size: fail before any forward
        clean_key = check_scores(self._key(images), "detector scores of the clean images")
        key, imgs, idx = self.top_candidates(images, k, clean_key=clean_key)
        self._record(idx[:, 0], key[:, 0], clean_key)
        res = CorruptionResult(images=imgs, index=idx, scores=(key * self.sign).detach(), keys=key,
                               clean_scores=(clean_key * self.sign).detach(), candidates=tuple(self.candidates),
                               table=self.resolved_table, target=self.target)
        self.last_topk = res
        return res

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._prepare(images)
        res = self.search(x)
        return res.images[:, 0].to(images.dtype)
