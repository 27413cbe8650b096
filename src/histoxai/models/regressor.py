"""The multi-target regressor: timm backbone, dense neck, one small head per target.

Architecture (as published for MICROMEN, with augmentations done in the data pipeline)::

    RGB [0, 1] -> [Macenko stain normalisation] -> (x - mean) / std
      -> [bilinear resize by input_scale]
      -> backbone (timm, num_classes=0, global average pooling)   (B, F)
      -> dropout -> dense(hidden_width) + act                      (B, hidden)
      -> per target: dense(feature_width) + act -> dropout -> linear(1)

``act`` is ReLU (``head_activation: relu``, the default) or none (``linear``: the
thesis' Table 3.1, Lank 2024, whose Dense layers are linear; the whole head is then an
affine map of the pooled features).
      -> * target_std + target_mean                                (B, T) real units

Targets are standardised with the training split's mean and std, which the model stores,
so every target (MD in um^2/ms, FA in [0, 1], nuclei counts) weighs alike in the loss
and ``forward`` returns real units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from histoxai.config import ModelConfig
from histoxai.models.backbones import create_backbone


class Regressor(nn.Module):
    """Predicts ``targets`` (in real units) from (B, 3, H, W) RGB in [0, 1].

    Attributes:
        targets: output column order, e.g. ``("md", "fa")``.
        backbone: the timm feature extractor (pick CAM layers from it).
        stain: the input stain normaliser (``nn.Identity`` when off).
        neck: dropout + dense(hidden_width) + activation (ReLU or none).
        heads: one ``nn.Sequential`` per target giving its standardised value.
    """

    def __init__(
        self,
        backbone: nn.Module,
        targets: Sequence[str],
        target_mean: Sequence[float],
        target_std: Sequence[float],
        dropout: float = 0.3,
        hidden_width: int = 256,
        feature_width: int = 64,
        input_mean: Sequence[float] = (0.485, 0.456, 0.406),
        input_std: Sequence[float] = (0.229, 0.224, 0.225),
        stain: nn.Module | None = None,
        head_activation: str = "relu",
        input_scale: float = 1.0,
    ):
        super().__init__()
        self.input_scale = float(input_scale)
        self.targets = tuple(targets)
        if len(target_mean) != len(self.targets) or len(target_std) != len(self.targets):
            raise ValueError(
                f"target_mean/target_std need one value per target {self.targets}, "
                f"got {len(target_mean)} and {len(target_std)}"
            )
        if any(not s > 0 for s in target_std):
            raise ValueError(f"target_std must be > 0, got {list(target_std)}")
        self.backbone = backbone
        self.stain = stain if stain is not None else nn.Identity()
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(input_std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))
        act = head_activation_module(head_activation)
        self.neck = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim(backbone), hidden_width), act())
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Linear(hidden_width, feature_width),
                    act(),
                    nn.Dropout(dropout),
                    nn.Linear(feature_width, 1),
                )
                for t in self.targets
            }
        )

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, T) standardised predictions (the training output)."""
        x = (self.stain(x) - self.input_mean) / self.input_std
        if self.input_scale != 1:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        h = self.neck(self.backbone(x))
        return torch.cat([self.heads[t](h) for t in self.targets], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, T) predictions in real units."""
        return self.standardized(x).float() * self.target_std + self.target_mean

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        """Real-unit targets (B, T) -> standardised."""
        return (y - self.target_mean) / self.target_std

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the backbone; heads stay trainable."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)


HEAD_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "linear": nn.Identity}
"""``model.head_activation`` -> the module after the neck's and each head's hidden Dense."""


def head_activation_module(name: str) -> type[nn.Module]:
    """The activation class of ``model.head_activation`` (``relu`` | ``linear``)."""
    if name not in HEAD_ACTIVATIONS:
        raise ValueError(f"model.head_activation={name!r}: expected one of {sorted(HEAD_ACTIVATIONS)}")
    return HEAD_ACTIVATIONS[name]


def feature_dim(backbone: nn.Module) -> int:
    """Width of a pooled timm backbone's output (``head_hidden_size`` where the model has a
    pre-logits head after pooling, e.g. MobileNetV3, else ``num_features``)."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def build_regressor(
    cfg: ModelConfig,
    target_mean: Sequence[float],
    target_std: Sequence[float],
    stain_reference: dict | None = None,
) -> Regressor:
    """Build the regressor of ``cfg`` (weights: random or pretrained backbone, random heads).

    Args:
        cfg: the ``model`` config section.
        target_mean: per target of ``cfg.targets``, the training-split mean.
        target_std: per target, the training-split standard deviation (> 0).
        stain_reference: ``{"he_ref", "max_c_ref"}`` of a fitted Macenko normaliser
            (see ``histoxai.stain``), or None for no stain normalisation.
    """
    backbone = create_backbone(cfg.backbone, cfg.pretrained, cfg.pretrained_file, cfg.output_stride)
    pcfg = getattr(backbone, "pretrained_cfg", None) or {}
    stain = None
    if stain_reference is not None:
        from histoxai.stain import MacenkoNormalizer

        stain = MacenkoNormalizer(stain_reference["he_ref"], stain_reference["max_c_ref"])
    return Regressor(
        backbone,
        cfg.targets,
        target_mean,
        target_std,
        dropout=cfg.dropout,
        hidden_width=cfg.hidden_width,
        feature_width=cfg.feature_width,
        input_mean=tuple(pcfg.get("mean", (0.485, 0.456, 0.406))),
        input_std=tuple(pcfg.get("std", (0.229, 0.224, 0.225))),
        stain=stain,
        head_activation=cfg.head_activation,
        input_scale=cfg.input_scale,
    )
