"""Interventional ground truth: does a map's mass on an object predict what removing
the object does to the model?

``histoxai.data.phantom_truth.ablate`` re-renders a patch from its seed without one
object at a time (a counted nucleus, a distractor cluster, an air blob): an
in-distribution intervention, unlike blurring (as CLEVR-XAI, XAI-Bench and FunnyBirds
do). The model is run on each re-rendered patch and the true effect of the object is
Δs = s(patch) − s(patch without it), in the explained score's units. Per patch the
metric is the Spearman correlation across its objects between the object's signed
relevance mass and Δs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from histoxai.xai_eval.registry import declare

OBJECT_CORR = declare("object_rank_corr", "intervention", higher=True)


def object_effects(
    records: Iterable, predict: Callable[[Tensor], Tensor], device, batch_size: int = 32
) -> pd.DataFrame:
    """Run the model on ablated patches: one row per object (patch_id, kind, object_id,
    s_without, mask) where ``mask`` is the (P, P) bool object mask."""
    rows, images = [], []
    for patch_id, kind, object_id, image, mask in records:
        img = np.asarray(image)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        rows.append({"patch_id": int(patch_id), "kind": str(kind), "object_id": int(object_id),
                     "mask": np.asarray(mask, dtype=bool)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["patch_id", "kind", "object_id", "mask"])
    if not rows:
        return frame.assign(s_without=[])
    x = torch.stack(images)
    with torch.no_grad():
        s = torch.cat(
            [predict(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
        )
    return frame.assign(s_without=s.numpy())


def object_scores(
    effects: pd.DataFrame, s_patch: Mapping[int, float], relevance: Mapping[int, np.ndarray]
) -> pd.DataFrame:
    """Per patch: Spearman between object mass and Δs.

    Args:
        effects: :func:`object_effects` rows.
        s_patch: patch id -> score of the intact patch.
        relevance: patch id -> (P, P) signed relevance of the method being scored.

    Returns:
        One row per patch with ≥ 3 objects: ``patch_id``, ``object_rank_corr``.
    """
    out = []
    for pid, part in effects.groupby("patch_id"):
        if len(part) < 3 or int(pid) not in relevance:
            continue
        rel = relevance[int(pid)]
        mass = np.array([float(rel[m].sum()) for m in part["mask"]])
        delta = float(s_patch[int(pid)]) - part["s_without"].to_numpy(np.float64)
        out.append({"patch_id": int(pid), OBJECT_CORR: _spearman(mass, delta)})
    return pd.DataFrame(out, columns=["patch_id", OBJECT_CORR])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))
