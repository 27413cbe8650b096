"""Split schemes recorded in the patch index (``split_<scheme>`` columns).

- ``random``: patch-level train/val/test by ``fractions`` (the published protocol).
- ``spatial_block``: square blocks of ``block_vox`` neighbouring voxels stay together,
  because MR maps are smoothed and neighbouring voxels leak into each other.
- ``leave_sample_out``: train (and val) on ``train_samples``, test on every other sample.

Samples in ``holdout_samples`` are ``out`` (out-of-sample) for the first two schemes; with
``in_samples`` set, every sample not in it is ``out`` too (the thesis: train on s3 and s4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from histoxai.config import SplitConfig


def assign_splits(index: pd.DataFrame, cfg: SplitConfig, seed: int) -> pd.DataFrame:
    """Return ``index`` with ``split_random``, ``split_spatial_block`` and
    ``split_leave_sample_out`` columns (values ``train``, ``val``, ``test``, ``out``)."""
    samples = index["sample"].unique().tolist()
    for name in (*cfg.holdout_samples, *cfg.train_samples, *cfg.in_samples):
        if name not in samples:
            raise ValueError(f"data.split: sample {name!r} is not in the data; samples are {samples}")
    if abs(sum(cfg.fractions) - 1) > 1e-6:
        raise ValueError(f"data.split.fractions={list(cfg.fractions)}: expected three fractions summing to 1")
    out = index.copy()
    held = index["sample"].isin(cfg.holdout_samples).to_numpy()
    if cfg.in_samples:
        held = held | ~index["sample"].isin(cfg.in_samples).to_numpy()
    rng = np.random.default_rng(seed)

    out["split_random"] = _by_units(np.arange(len(index)), cfg.fractions, rng, held)
    blocks = (
        index.groupby(
            [index["sample"], index["row"] // cfg.block_vox, index["col"] // cfg.block_vox], sort=False
        )
        .ngroup()
        .to_numpy()
    )
    out["split_spatial_block"] = _by_units(blocks, cfg.fractions, rng, held)

    train_samples = cfg.train_samples or tuple(samples[: max(1, len(samples) - max(1, len(samples) // 3))])
    in_train = index["sample"].isin(train_samples).to_numpy()
    val_share = cfg.fractions[1] / (cfg.fractions[0] + cfg.fractions[1])
    lso = _by_units(np.arange(len(index)), (1 - val_share, val_share, 0.0), rng, ~in_train)
    out["split_leave_sample_out"] = np.where(in_train, lso, "test")
    return out


def _by_units(units: np.ndarray, fractions, rng: np.random.Generator, held: np.ndarray) -> np.ndarray:
    """Assign each unit (patch or block) to train/val/test; ``held`` rows become ``out``."""
    uniq = np.unique(units[~held])
    order = rng.permutation(uniq)
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    label = np.full(units.max() + 1 if len(units) else 0, "test", dtype=object)
    label[order[:n_train]] = "train"
    label[order[n_train : n_train + n_val]] = "val"
    result = label[units]
    result[held] = "out"
    return result.astype(str)
