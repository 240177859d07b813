"""atom_plugin: robust out-of-distribution detection on top of torchattacks.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]`` everywhere; detector scores are
OOD scores (higher = more OOD); attack objectives are maximized by the attacker of an
OOD input.  See the README for the conventions and the architecture.

The most used names are re-exported here; every subpackage is importable on its own
(``atom_plugin.data``, ``atom_plugin.pretrained``, ``atom_plugin.corruptions``,
``atom_plugin.theory``, ``atom_plugin.distributed``, ...).
"""
from . import _compat  # noqa: F401  (must run before torchvision/timm/robustbench imports)

__version__ = "0.1.0"

from .models import Normalize, SmallCNN, head_spec, with_reject_head  # noqa: E402
from .features import FeatureTap  # noqa: E402
from .objectives import energy, mahalanobis_logistic, neg_energy, reject_nll, reject_sum_nll, uniform_ce  # noqa: E402
from .detectors import (  # noqa: E402
    MSP, ODIN, Detector, Energy, Mahalanobis, ObjectiveDetector, RejectClass, RejectSum, ScoreDetector, as_detector,
)
from .detectors import (  # noqa: E402
    ASH, DICE, GEN, KNN, RMD, Entropy, KLMatching, MaxLogit, ReAct, ViM, from_openood, from_pytorch_ood,
)
from .attacks import (  # noqa: E402
    OODAPGD, OODFGSM, OODPGD, CompositionalAttack, CorruptionAttack, OODAttack, OODMultiAttack,
)
from .attacks import OODAutoAttack, OODSquare, masking_diagnostics  # noqa: E402
from .corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt  # noqa: E402
from .metrics import OODMetrics, auroc, aupr_in, aupr_out, detection_error, fpr95_ood_positive, fpr_at_tpr  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .report import Comparison, Report  # noqa: E402
from .mining import OutlierMiner  # noqa: E402
from .training import TrainConfig, Trainer, train  # noqa: E402
from .data import load_dataset, load_default_benchmark  # noqa: E402
from .pretrained import create_timm_model, load_robustbench_model  # noqa: E402

__all__ = [
    "__version__",
    # models
    "Normalize", "SmallCNN", "head_spec", "with_reject_head", "FeatureTap",
    "create_timm_model", "load_robustbench_model",
    # objectives
    "uniform_ce", "reject_nll", "reject_sum_nll", "energy", "neg_energy", "mahalanobis_logistic",
    # detectors
    "Detector", "MSP", "ODIN", "Mahalanobis", "Energy", "RejectClass", "RejectSum", "ScoreDetector",
    "ObjectiveDetector", "as_detector",
    "MaxLogit", "Entropy", "GEN", "KLMatching", "KNN", "ViM", "ReAct", "ASH", "DICE", "RMD",
    "from_pytorch_ood", "from_openood",
    # attacks
    "OODAttack", "OODPGD", "OODFGSM", "OODAPGD", "OODMultiAttack", "CorruptionAttack", "CompositionalAttack",
    "OODSquare", "OODAutoAttack", "masking_diagnostics",
    "corrupt", "CORRUPTIONS", "EXTRA_CORRUPTIONS",
    # evaluation
    "fpr_at_tpr", "fpr95_ood_positive", "auroc", "aupr_in", "aupr_out", "detection_error", "OODMetrics",
    "evaluate", "Report", "Comparison",
    # training
    "OutlierMiner", "TrainConfig", "Trainer", "train",
    # data
    "load_default_benchmark", "load_dataset",
]
