"""Shortcut check: does a method reveal that a model reads a spurious cue?

A phantom built with ``data.phantom.shortcut: true`` carries a faint mark along the
patch border whose strength is correlated with MD (index column ``shortcut_cue``). A
model trained on it can predict MD from the border alone. A useful method then puts
far more of its attribution on the border band than the band's share of the patch
area; :func:`shortcut_report` tabulates that ratio per method.

Like every share in the report, the border share counts the positive part of the
signed relevance (:mod:`histoxai.xai_eval.relevance`): a method that reveals the
shortcut marks the border as raising the prediction. CNN gradients have a border bias
of their own (zero padding), so read the ratio against a model trained without the cue.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from histoxai.xai_eval.localisation import mass_share


def border_band(height: int, width: int, band_px: int) -> Tensor:
    """(H, W) bool: pixels within ``band_px`` of the patch edge."""
    if band_px < 1 or 2 * band_px >= min(height, width):
        raise ValueError(f"border band of {band_px} px does not fit a {height}x{width} patch")
    band = torch.ones(height, width, dtype=torch.bool)
    band[band_px:-band_px, band_px:-band_px] = False
    return band


def border_share(maps: Tensor, band_px: int) -> tuple[Tensor, float]:
    """Share of positive relevance on the border band, (B,), and the band's area share."""
    band = border_band(*maps.shape[-2:], band_px).to(maps.device)
    return mass_share(maps, band.expand_as(maps)).cpu(), float(band.float().mean())


def shortcut_report(
    maps_by_method: Mapping[str, Tensor], band_px: int, cue: np.ndarray | None = None
) -> pd.DataFrame:
    """Per method: mean border share, area share, their ratio, and (with ``cue``) the
    Spearman correlation across patches between a map's border share and the cue.

    Args:
        maps_by_method: method/variant name -> (B, H, W) maps of the same patches.
        band_px: width of the border band holding the cue.
        cue: (B,) cue strength per patch (index column ``shortcut_cue``), optional.

    Returns:
        One row per method: ``method``, ``border_share``, ``area_share``, ``ratio``
        (> 1: the method points at the border more than chance), ``cue_corr``.
    """
    rows = []
    for name, maps in maps_by_method.items():
        share, area = border_share(maps, band_px)
        mean = float(share.nanmean())
        row = {"method": name, "border_share": mean, "area_share": area, "ratio": mean / area}
        if cue is not None:
            row["cue_corr"] = _spearman(share.numpy(), np.asarray(cue, dtype=np.float64))
        rows.append(row)
    return pd.DataFrame(rows)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")  # undefined for constant inputs
    return float(pd.Series(a[ok]).corr(pd.Series(b[ok]), method="spearman"))
