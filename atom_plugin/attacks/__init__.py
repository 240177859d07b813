"""OOD attacks as torchattacks plugins (``torchattacks.Attack`` subclasses).

Every attack takes a Detector (or a model + objective) and images in [0, 1]; labels are
optional.  ``target="ood"`` makes OOD inputs look in-distribution, ``target="in"`` the
reverse.  See :mod:`atom_plugin.attacks.base`.
"""
from .base import DetectorDecision, OODAttack
from .registry import ATTACKS, attack_info, create_attack, list_attacks, register_attack
from .ood_pgd import OODPGD
from .ood_fgsm import OODFGSM
from .ood_apgd import OODAPGD
from .ood_square import OODSquare
from .ood_autoattack import OODAutoAttack, margin_objective
from .diagnostics import masking_diagnostics
from .corruption import CorruptionAttack, CorruptionResult
from .compositional import CompositionalAttack
from .ood_multi import OODMultiAttack

__all__ = [
    "DetectorDecision", "OODAttack", "ATTACKS", "attack_info", "create_attack", "list_attacks", "register_attack",
    "OODPGD", "OODFGSM", "OODAPGD", "OODSquare", "OODAutoAttack", "margin_objective", "masking_diagnostics",
    "CorruptionAttack", "CorruptionResult", "CompositionalAttack", "OODMultiAttack",
]

from . import interop as _interop  # noqa: E402

_interop.install()
