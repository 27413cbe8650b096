"""A tiny regressor with the model contract (``targets``, ``backbone``, [0, 1] input, real units)."""

from __future__ import annotations

import pytest
import timm
import torch

from histoxai.config import ModelConfig


class StandIn(torch.nn.Module):
    """Stand-in for ``histoxai.models.Regressor`` until it lands: backbone + linear head."""

    def __init__(self, targets, backbone: str):
        super().__init__()
        self.targets = tuple(targets)
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        self.head = torch.nn.Linear(self.backbone.num_features, len(self.targets))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.head(self.backbone((x - self.mean) / self.std)) * 0.5 + 1.0


def tiny_regressor(targets=("md", "fa"), backbone: str = "resnet10t", seed: int = 0) -> torch.nn.Module:
    """``histoxai.models.build_regressor`` on a small timm backbone, untrained, eval mode."""
    torch.manual_seed(seed)
    try:
        from histoxai.models import build_regressor
    except ImportError:
        return StandIn(targets, backbone).eval()
    cfg = ModelConfig(backbone=backbone, targets=tuple(targets), hidden_width=16, feature_width=8, dropout=0.0)
    model = build_regressor(cfg, [1.0] * len(targets), [0.5] * len(targets))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_regressor()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 64, 64, generator=g)
