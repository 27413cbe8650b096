"""Synthetic saliency stores for tests, the benchmark and trying the dashboard without
a trained model: maps derived from the patches (dark = nuclei) plus smooth noise, and
predictions ``y_hat = y + noise``. Not explanations of anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from histoxai.data.store import PatchStore
from histoxai.explain.store import META_COLUMNS, SaliencyStore, relative_error

VARIANTS: dict[str, dict] = {
    "gradcampp": {"method": "gradcampp", "params": {}},
    "layercam": {"method": "layercam", "params": {}},
    "smoothgrad_s0.1": {"method": "smoothgrad", "params": {"sigma": 0.1, "n": 16}},
    "smoothgrad_s0.2": {"method": "smoothgrad", "params": {"sigma": 0.2, "n": 16}},
}
SIGNED = ("smoothgrad",)


def fake_saliency(
    patches: PatchStore,
    root: str | Path,
    targets: Sequence[str],
    variants: dict[str, dict] | None = None,
    patch_ids: np.ndarray | None = None,
    split_column: str = "split_random",
    seed: int = 0,
    chunk: int = 2048,
) -> SaliencyStore:
    """Write a complete saliency store for ``patch_ids`` (default: all) of ``patches``."""
    variants = dict(variants or VARIANTS)
    ids = np.arange(len(patches)) if patch_ids is None else np.asarray(patch_ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    index = patches.index.set_index("patch_id").loc[ids]
    split = index[split_column].astype(str) if split_column in index else pd.Series("test", index=index.index)
    frames = []
    for t in targets:
        y = index[t].to_numpy(np.float64)
        y_hat = y + rng.normal(0.0, 0.1 * (np.nanstd(y) or 1.0), size=len(y))
        frames.append(
            pd.DataFrame(
                {
                    "patch_id": ids,
                    "sample": index["sample"].astype(str).to_numpy(),
                    "row": index["row"].to_numpy(),
                    "col": index["col"].to_numpy(),
                    "split": split.to_numpy(),
                    "target": t,
                    "y": y,
                    "y_hat": y_hat,
                    "delta": y_hat - y,
                    "rel_delta": relative_error(y, y_hat),
                }
            )
        )
    manifest = {
        "model_uri": "models:/synthetic/1",
        "model_name": "synthetic",
        "model_version": "1",
        "patch_ids": ids.tolist(),
        "targets": list(targets),
        "variants": variants,
    }
    store = SaliencyStore.create(root, manifest, pd.concat(frames, ignore_index=True)[list(META_COLUMNS)])
    size = patches.patch_size
    for ti, t in enumerate(targets):
        for vi, (name, spec) in enumerate(variants.items()):
            maps = np.empty((len(ids), size, size), dtype=np.float16)
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                maps[start : start + len(part)] = _maps(
                    patches.images(part), spec.get("method", name), ti, vi, rng
                )
            store.write_maps(t, name, maps)
    return store


def _maps(images: np.ndarray, method: str, ti: int, vi: int, rng: np.random.Generator) -> np.ndarray:
    # (B, H, W): blurred darkness of the patch (nuclei are dark), shifted per target and
    # variant, times a smooth random field, so methods and targets look different.
    b, h, w, _ = images.shape
    dark = 1.0 - images.sum(axis=-1, dtype=np.uint16).astype(np.float32) / (3 * 255.0)
    dark = np.roll(dark, shift=(ti * 5 + vi * 3, vi * 4), axis=(1, 2))
    size = max(int(h / 12 * (1 + vi % 3)), 1)
    dark = ndimage.uniform_filter(dark, size=(1, size, size), mode="reflect")
    field = _bilinear(h) @ rng.random((b, 3, 3)).astype(np.float32) @ _bilinear(w).T
    m = np.clip(dark - dark.mean(axis=(1, 2), keepdims=True) * 0.8, 0.0, None) * (0.2 + field)
    if method in SIGNED:
        m = m * np.sign(rng.random((b, 1, 1)) - 0.3) - 0.1 * m.mean(axis=(1, 2), keepdims=True)
        return (m * 0.01).astype(np.float16)
    return m.astype(np.float16)


def _bilinear(n: int, k: int = 3) -> np.ndarray:
    """(n, k) weights interpolating k control points linearly onto n pixels."""
    x = np.linspace(0, k - 1, n)
    return np.clip(1.0 - np.abs(x[:, None] - np.arange(k)[None, :]), 0.0, None).astype(np.float32)
