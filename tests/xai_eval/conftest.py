"""Tiny models and explainers with known behaviour for the XAI-evaluation tests."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import Tensor, nn


class TinyRegressor(nn.Module):
    """The Regressor contract in miniature: timm resnet10t (random weights) + linear heads."""

    def __init__(self, targets=("md", "fa"), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.targets = tuple(targets)
        self.backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, len(self.targets))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x * 2.0 - 1.0))


class RegionRedModel(nn.Module):
    """Output = mean red value inside ``region`` (B, 1): the region's red pixels are the
    only features that drive the prediction. ``backbone`` is a 1x1 conv that passes the
    red channel through (so randomising it changes the model)."""

    def __init__(self, region: Tensor, targets=("md",)):
        super().__init__()
        self.targets = tuple(targets)
        self.register_buffer("region", region.float())
        self.backbone = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.backbone.weight.zero_()
            self.backbone.weight[0, 0] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        red = self.backbone(x)[:, 0]
        return ((red * self.region).sum(dim=(-2, -1)) / self.region.sum())[:, None].repeat(
            1, len(self.targets)
        )


def input_gradient(head: int = 0):
    """Explainer: Σ_c ∂ŷ_head/∂x_c (a real model-dependent method)."""

    def explain(model: nn.Module, images: Tensor) -> Tensor:
        x = images.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, head].sum(), x)
        return grad.sum(dim=1).detach()

    return explain


def constant_map(model: nn.Module, images: Tensor) -> Tensor:
    return torch.ones(images.shape[0], *images.shape[-2:], device=images.device)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is much faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model() -> TinyRegressor:
    return TinyRegressor().eval()


@pytest.fixture
def images() -> Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def phantom_cc(tmp_path_factory):
    """A small phantom (3 samples x 6 x 6 voxels, 32 px) and a tiny CC regressor trained
    on its first two samples for a few hundred steps (seconds on one core)."""
    import numpy as np

    from histoxai.config import ModelConfig
    from histoxai.models import build_regressor
    from tests.training.conftest import phantom_store

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = phantom_store(tmp_path_factory.mktemp("xai_phantom") / "patches", n_samples=3, grid=6, size=32)
    ids = store.ids()
    x = torch.from_numpy(store.images(ids)).permute(0, 3, 1, 2).float().div(255.0)
    y = torch.from_numpy(store.index["cc"].to_numpy(np.float32)[ids])
    train = np.flatnonzero(store.index["sample"].to_numpy()[ids] != "s3")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_resnet", targets=("cc",), hidden_width=32, feature_width=16, dropout=0.0)
    model = build_regressor(cfg, [float(y[train].mean())], [float(y[train].std())])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        b = torch.from_numpy(train)[torch.randint(0, len(train), (32,), generator=g)]
        xb = x[b]
        if torch.rand(1, generator=g) < 0.5:
            xb = xb.flip(-1)
        loss = ((model.standardized(xb)[:, 0] - (y[b] - y[train].mean()) / y[train].std()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(threads)
    return {"store": store, "model": model, "ids": ids, "images": x, "y": y.numpy().astype(np.float64)}
