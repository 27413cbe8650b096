"""On a nuclei-count model trained on the phantom, SmoothGrad looks at nuclei."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from histoxai.config import (
    AugmentConfig,
    Config,
    ModelConfig,
    PhantomConfig,
    SplitConfig,
    TrainConfig,
    VariantConfig,
)
from histoxai.data.phantom import generate_phantom
from histoxai.data.splits import assign_splits
from histoxai.data.store import MASK_CLASSES, write_store
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.training.session import train_regressor


@pytest.mark.slow
def test_smoothgrad_attribution_on_nuclei_exceeds_their_area_share(tmp_path):
    blocks, card = generate_phantom(PhantomConfig(n_samples=2, grid_vox=(8, 8)), 32, seed=0)
    patches = write_store(
        tmp_path / "patches", blocks, card, partial(assign_splits, cfg=SplitConfig(), seed=0)
    )
    cfg = Config(
        model=ModelConfig(
            backbone="resnet10t", targets=("cc",), hidden_width=32, feature_width=16, dropout=0.0
        ),
        train=TrainConfig(
            epochs=6,
            batch_size=16,
            lr=2e-3,
            patience=50,
            device="cpu",
            channels_last=False,
            augment=AugmentConfig(),
        ),
    )
    model, _, _ = train_regressor(cfg, patches, progress=False)
    ids = patches.ids("test", "random")
    variants = resolve_variants([VariantConfig("smoothgrad_s0.2", "smoothgrad", {"sigma": 0.2, "n": 10})])
    store = explain_patches(model, patches, ids, tmp_path / "sal", variants, device="cpu", progress=False)

    meta = store.meta
    assert np.corrcoef(meta["y"], meta["y_hat"])[0, 1] > 0.8  # the model did learn to count
    attribution = np.abs(store.read("cc", "smoothgrad_s0.2"))
    nuclei = patches.masks(store.patch_ids) == MASK_CLASSES.index("nuclei")
    share = (attribution * nuclei).sum() / attribution.sum()
    area = nuclei.mean()
    assert share > 1.2 * area, f"nuclei hold {share:.2f} of |SmoothGrad| but {area:.2f} of the area"
