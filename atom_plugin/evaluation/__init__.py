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

Layout: :mod:`.config` (``EvalConfig``), :mod:`.tasks` (the task registry: how each
task's attack is built from the config), :mod:`.batches` (sharded streaming),
:mod:`.scoring` (seeds, attack runs, scoring), :mod:`.run` (``evaluate`` in named steps).

Multi-process: under ``torchrun`` (after :func:`atom_plugin.distributed.init_from_env`),
each rank takes a contiguous block of batches of each set, scores are gathered, and every
rank returns the same :class:`~atom_plugin.report.Report` (write it on rank 0 only).
"""
from .config import PAPER_TASKS, EvalConfig
from .tasks import TASKS as TASK_REGISTRY, build_attack, list_tasks, register_task, task_info
from .scoring import Scorer, batch_seed, run_attack, seeded, to_uint8
from .run import evaluate

#: the paper's four OOD tasks (Table 1 column groups)
TASKS = PAPER_TASKS
#: with the attacked-ID tasks
ALL_TASKS = TASKS + ("in", "in_out")

__all__ = ["evaluate", "EvalConfig", "TASKS", "ALL_TASKS", "PAPER_TASKS", "TASK_REGISTRY", "register_task",
           "list_tasks", "task_info", "build_attack", "Scorer", "batch_seed", "seeded", "run_attack", "to_uint8"]
