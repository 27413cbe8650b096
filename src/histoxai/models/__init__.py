"""The regressor (timm backbone + per-target heads), its factory and checkpoints."""

from histoxai.models.backbones import PretrainedWeightsError, create_backbone
from histoxai.models.checkpoint import load_checkpoint, save_checkpoint
from histoxai.models.regressor import Regressor, build_regressor

__all__ = [
    "PretrainedWeightsError",
    "Regressor",
    "build_regressor",
    "create_backbone",
    "load_checkpoint",
    "save_checkpoint",
]
