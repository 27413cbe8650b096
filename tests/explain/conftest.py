"""A tiny regressor with the model contract (``targets``, ``backbone``, [0, 1] input, real units)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from histoxai.config import ModelConfig, SplitConfig
from histoxai.data.splits import assign_splits
from histoxai.data.store import PatchStore, SampleBlock, write_store


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
    cfg = ModelConfig(
        backbone=backbone, targets=tuple(targets), hidden_width=16, feature_width=8, dropout=0.0
    )
    model = build_regressor(cfg, [1.0] * len(targets), [0.5] * len(targets))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_regressor()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 64, 64, generator=g)


def random_blocks(n_samples: int = 2, grid: int = 3, size: int = 32, seed: int = 0) -> list[SampleBlock]:
    """Random patches with md/fa targets and mask labels (``MASK_CLASSES``)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in range(n_samples):
        n = grid * grid
        rows, cols = np.divmod(np.arange(n), grid)
        table = pd.DataFrame(
            {"row": rows, "col": cols, "md": rng.uniform(0.5, 1.5, n), "fa": rng.uniform(0.1, 0.9, n)}
        )
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        masks = rng.integers(0, 4, size=(n, size, size), dtype=np.uint8)
        blocks.append(SampleBlock(f"s{k + 1}", images, table, masks))
    return blocks


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> PatchStore:
    root = tmp_path_factory.mktemp("explain") / "patches"
    return write_store(
        root, random_blocks(), {"source": "test"}, partial(assign_splits, cfg=SplitConfig(), seed=0)
    )
