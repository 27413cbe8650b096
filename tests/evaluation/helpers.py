"""Plain helpers for the evaluation tests: constructed predictions frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from histoxai.data.store import PatchStore


def predictions_from_store(
    store: PatchStore, targets=("md", "fa"), noise: float = 0.3, seed: int = 0, scheme="random"
):
    """A predictions frame as the train stage writes it: y from the store, yhat = y + noise·sd(y)."""
    rng = np.random.default_rng(seed)
    index = store.index
    pred = index[["patch_id", "sample", "row", "col"]].copy()
    pred["split"] = index[f"split_{scheme}"].to_numpy()
    for t in targets:
        y = index[t].to_numpy(np.float64)
        pred[f"y_{t}"] = y
        pred[f"yhat_{t}"] = y + rng.normal(0, noise * np.nanstd(y), len(y))
    return pred


def frame(split, sample, y, yhat, rows=None, cols=None, target="md") -> pd.DataFrame:
    """A predictions frame for one target from plain lists."""
    n = len(y)
    return pd.DataFrame(
        {
            "patch_id": np.arange(n),
            "sample": sample if isinstance(sample, list) else [sample] * n,
            "row": rows if rows is not None else np.arange(n),
            "col": cols if cols is not None else np.zeros(n, dtype=int),
            "split": split if isinstance(split, list) else [split] * n,
            f"y_{target}": np.asarray(y, dtype=float),
            f"yhat_{target}": np.asarray(yhat, dtype=float),
        }
    )


def make_phantom_store(root) -> PatchStore:
    """Three phantom samples of 5x6 voxels at 32 px; s3 is held out (``out``)."""
    from functools import partial

    from histoxai.config import load_config
    from histoxai.data.phantom import generate_phantom
    from histoxai.data.splits import assign_splits
    from histoxai.data.store import write_store

    cfg = load_config(
        None,
        ["data.phantom.n_samples=3", "data.phantom.grid_vox=[5,6]", "data.split.holdout_samples=[s3]"],
    )
    blocks, card = generate_phantom(cfg.data.phantom, 32, seed=0)
    return write_store(root, blocks, card, partial(assign_splits, cfg=cfg.data.split, seed=0))
