"""OOD detectors sharing one contract (see :mod:`atom_plugin.detectors.base`):
``score(x)`` (higher = more OOD), ``attack_loss(x)`` (maximized by the attacker of an
OOD input), ``classify(x)``, ``fit(loader)``.  Public methods validate their inputs;
``_score`` / ``_attack_loss`` are the non-validating versions for use inside loops."""
from .base import Detector
from ._checked import CheckedDetector
from .msp import MSP
from .energy import Energy
from .odin import ODIN
from .mahalanobis import Mahalanobis, NotFittedError, SaturationWarning
from .reject import RejectClass, RejectSum
from .score_fn import ScoreDetector
from .objective import ObjectiveDetector, as_detector

__all__ = [
    "Detector",
    "CheckedDetector",
    "MSP",
    "Energy",
    "ODIN",
    "Mahalanobis",
    "NotFittedError",
    "SaturationWarning",
    "RejectClass",
    "RejectSum",
    "ScoreDetector",
    "ObjectiveDetector",
    "as_detector",
]
