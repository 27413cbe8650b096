"""Tiny phantom stores and a tiny, fast training config for the training/model/tracking tests."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from histoxai.config import Config, PhantomConfig, SplitConfig, load_config
from histoxai.data.splits import assign_splits
from histoxai.data.store import PatchStore, write_store

TINY_MODEL = [
    "model.backbone=test_resnet",  # timm's 0.4 M-parameter test network, random init
    "model.hidden_width=32",
    "model.feature_width=16",
    "model.dropout=0.1",
]
TINY_TRAIN = ["train.batch_size=16", "train.epochs=15", "train.patience=15", "train.threads=1"]


def phantom_store(root: Path, n_samples: int = 3, grid: int = 8, size: int = 32, seed: int = 0) -> PatchStore:
    """A small phantom patch store (``n_samples`` x ``grid``^2 patches of ``size`` px)."""
    from histoxai.data.phantom import generate_phantom

    split = SplitConfig(train_samples=("s1", "s2"))
    # rendered at 1 um/px and box-downsampled: small patches keep nuclei several pixels wide
    cfg = PhantomConfig(n_samples=n_samples, grid_vox=(grid, grid), um_per_px=1.0)
    blocks, card = generate_phantom(cfg, size, seed)
    return write_store(root, blocks, card, partial(assign_splits, cfg=split, seed=seed))


def tiny_config(store: PatchStore, tmp_path: Path, *overrides: str) -> Config:
    """A config training the tiny network on ``store`` for seconds, outputs under ``tmp_path``."""
    return load_config(
        None,
        [
            f"base.patches_dir={store.root}",
            f"base.models_dir={tmp_path / 'models'}",
            f"data.patch_size_px={store.patch_size}",
            "data.split.train_samples=[s1, s2]",
            *TINY_MODEL,
            *TINY_TRAIN,
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> PatchStore:
    """3 phantom samples x 8 x 8 voxels, 32 px patches (192 patches), built once."""
    return phantom_store(tmp_path_factory.mktemp("phantom") / "patches")
