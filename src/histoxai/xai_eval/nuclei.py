"""What the model attends to in a nucleus: per-nucleus attribution against nucleus
size, elongation, orientation, local density and position (border vs centre).

For each counted nucleus the *attribution density ratio* is its share of the patch's
positive relevance divided by its share of the patch's pixels (1: as much as a uniform
map gives; > 1: the method concentrates on it). Orientation enters as alignment with
the patch's area-weighted mean orientation, cos 2(θ − θ̄) (1: aligned, −1: across),
which is what the FA formula rewards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from histoxai.xai_eval.localisation import nucleus_mass

PROPERTIES: tuple[str, ...] = ("area_px", "elongation", "alignment", "local_density", "border")


def nucleus_table(rel: torch.Tensor, truth, method: str) -> pd.DataFrame:
    """One row per counted nucleus visible in a patch: patch_id, nucleus, ``ratio`` and
    :data:`PROPERTIES` (from ``truth.nuclei``)."""
    n_px = rel.shape[-1] * rel.shape[-2]
    pos_total = rel.flatten(1).clamp_min(0).sum(dim=1).double().cpu().numpy()
    masses = nucleus_mass(rel, torch.as_tensor(truth.instances).to(rel.device))
    nuc = truth.nuclei
    ids = list(dict.fromkeys(nuc["patch_id"].tolist()))
    patch_rows = {int(p): i for i, p in enumerate(truth.patch_ids)}
    rows = []
    for pid in ids:
        i = patch_rows.get(int(pid))
        if i is None:
            continue
        part = nuc[(nuc["patch_id"] == pid) & nuc["counted"].astype(bool)]
        if not len(part):
            continue
        w = part["area_px"].to_numpy(np.float64)
        theta = part["orientation_rad"].to_numpy(np.float64)
        mean_angle = 0.5 * np.angle((w * np.exp(2j * theta)).sum())
        mass = masses[i].double().cpu().numpy()
        for (_, r), align in zip(part.iterrows(), np.cos(2 * (theta - mean_angle))):
            k, vis = int(r["nucleus"]), float(r["visible_px"])
            if vis <= 0 or k > len(mass) or pos_total[i] <= 0:
                continue
            rows.append({"method": method, "patch_id": int(pid), "nucleus": k,
                         "ratio": (mass[k - 1] / pos_total[i]) / (vis / n_px), "area_px": float(r["area_px"]),
                         "elongation": float(r["elongation"]), "alignment": float(align),
                         "local_density": float(r["local_density"]), "border": bool(r["border"])})  # fmt: skip
    return pd.DataFrame(rows)


def property_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: Spearman ρ of the ratio with each property, and the mean ratio of
    border vs centre nuclei."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        row = {"method": method, "nuclei": len(part)}
        for prop in PROPERTIES[:-1]:
            ok = part[prop].notna() & part["ratio"].notna()
            row[f"rho_{prop}"] = (
                float(part.loc[ok, "ratio"].corr(part.loc[ok, prop], method="spearman"))
                if ok.sum() > 2
                else np.nan
            )
        row["ratio_border"] = (
            float(part.loc[part["border"], "ratio"].mean()) if part["border"].any() else np.nan
        )
        row["ratio_centre"] = (
            float(part.loc[~part["border"], "ratio"].mean()) if (~part["border"]).any() else np.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def binned(table: pd.DataFrame, prop: str, n_bins: int = 4) -> pd.DataFrame:
    """Mean ratio per quantile bin of ``prop`` per method (long: method, lo, hi, ratio, n)."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        vals = part[prop].astype(float)
        if vals.nunique() < 2:
            continue
        bins = pd.qcut(vals, q=min(n_bins, vals.nunique()), duplicates="drop")
        for interval, g in part.groupby(bins, observed=True):
            rows.append({"method": method, "lo": float(interval.left), "hi": float(interval.right),
                         "ratio": float(g["ratio"].mean()), "n": len(g)})  # fmt: skip
    return pd.DataFrame(rows)
