"""OOD detectors sharing one contract (see :mod:`atom_plugin.detectors.base`):
``score(x)`` (higher = more OOD), ``attack_loss(x)`` (maximized by the attacker of an
OOD input), ``classify(x)``, ``fit(loader)``.  Public methods validate their inputs;
``_score`` / ``_attack_loss`` are the bare versions for use inside loops.

Every built-in detector is registered (:mod:`atom_plugin.detectors.registry`):
``create_detector("energy", model)``, ``list_detectors()``."""
from .base import CheckedDetector, Detector, NotFittedError
from .registry import DETECTORS, create_detector, detector_info, list_detectors, register_detector
from .msp import MSP
from .energy import Energy
from .odin import ODIN
from .mahalanobis import Mahalanobis, SaturationWarning
from .reject import RejectClass, RejectSum
from .score_fn import ScoreDetector
from .objective import ObjectiveDetector, as_detector
from .maxlogit import MaxLogit
from .entropy import Entropy
from .gen import GEN
from .klmatching import KLMatching
from .knn import KNN
from .vim import ViM
from .react import ReAct
from .ash import ASH
from .dice import DICE
from .rmd import RMD
from .adapters import from_openood, from_pytorch_ood, pytorch_ood_detector

__all__ = [
    "Detector",
    "CheckedDetector",
    "NotFittedError",
    "DETECTORS",
    "register_detector",
    "create_detector",
    "list_detectors",
    "detector_info",
    "MSP",
    "Energy",
    "ODIN",
    "Mahalanobis",
    "SaturationWarning",
    "RejectClass",
    "RejectSum",
    "ScoreDetector",
    "ObjectiveDetector",
    "as_detector",
    "MaxLogit",
    "Entropy",
    "GEN",
    "KLMatching",
    "KNN",
    "ViM",
    "ReAct",
    "ASH",
    "DICE",
    "RMD",
    "from_pytorch_ood",
    "from_openood",
    "pytorch_ood_detector",
]
