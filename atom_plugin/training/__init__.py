"""Training robust OOD detectors: ATOM, NTOM (informative outlier mining) and the
baselines OE, ACET, ALOE, AOE, all through one loop (:class:`Trainer`).

Quick start::

    from atom_plugin import SmallCNN, Normalize, with_reject_head
    from atom_plugin.training import TrainConfig, train
    model = with_reject_head(Normalize(SmallCNN(10), mean, std), 10)   # K+1 outputs
    cfg = TrainConfig(method="atom", epochs=100, q=0.125, pool_size=400_000, mined_size=100_000)
    train(model, train_set, aux_set, cfg, out_dir="runs/atom", resume=True)
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import DEFAULT_LAMBDA, METHODS, MINING_METHODS, TrainConfig
from .methods import RECIPES, Recipe, make_recipe, pgd_maximize
from .trainer import Trainer, TrainingDiverged, train

__all__ = [
    "TrainConfig", "METHODS", "MINING_METHODS", "DEFAULT_LAMBDA", "Trainer", "train", "TrainingDiverged",
    "Recipe", "RECIPES", "make_recipe", "pgd_maximize", "save_checkpoint", "load_checkpoint",
]
