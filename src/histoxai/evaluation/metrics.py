"""Regression metrics per split and per sample, named ``split/metric_target`` (``test/r2_md``).

A predictions frame has one row per patch with ``sample``, ``row``, ``col``, ``split`` and,
per target ``t``, ``y_<t>`` (measured) and ``yhat_<t>`` (predicted), in real units.

Per sample, patches are grouped as in the published per-sample table:

- ``in`` (in-sample): patches of a sample the model trained on (it has ``train``
  patches) that are in ``train``/``val``/``test``;
- ``out`` (out-of-sample): the sample's ``out`` patches, or all its patches when the
  model never saw the sample (e.g. the ``test`` samples of ``leave_sample_out``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from histoxai.data.store import SPLITS

METRICS: tuple[str, ...] = ("r2", "mse", "mae")
GROUPS: tuple[str, ...] = ("in", "out")


def regression_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """R², MSE and MAE of ``yhat`` against ``y`` over the pairs where both are finite.

    R² = 1 - SS_res / SS_tot with SS_tot about the mean of ``y`` in this subset, so
    predicting that mean gives 0 and perfect predictions give 1. R² is NaN for fewer
    than two pairs or constant ``y``; all metrics are NaN without pairs.

    Returns:
        ``{"r2", "mse", "mae", "n"}``.
    """
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    if y.size == 0:
        return {"r2": np.nan, "mse": np.nan, "mae": np.nan, "n": 0}
    residual = yhat - y
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if y.size >= 2 and ss_tot > 0 else np.nan
    return {"r2": r2, "mse": ss_res / y.size, "mae": float(np.mean(np.abs(residual))), "n": int(y.size)}


def _row(frame: pd.DataFrame, targets: Sequence[str]) -> dict[str, float]:
    row: dict[str, float] = {}
    for t in targets:
        m = regression_metrics(frame[f"y_{t}"].to_numpy(), frame[f"yhat_{t}"].to_numpy())
        row.update({f"{name}_{t}": m[name] for name in METRICS})
        row[f"n_{t}"] = m["n"]
    return row


def per_split_table(pred: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Metrics per split present in ``pred`` (rows ``train``, ``val``, ``test``, ``out``).

    Columns ``r2_<t>``, ``mse_<t>``, ``mae_<t>``, ``n_<t>`` per target.
    """
    splits = [s for s in SPLITS if (pred["split"] == s).any()]
    rows = [_row(pred[pred["split"] == s], targets) for s in splits]
    return pd.DataFrame(rows, index=pd.Index(splits, name="split"))


def sample_groups(pred: pd.DataFrame) -> np.ndarray:
    """``"in"`` or ``"out"`` per row (see the module docstring)."""
    seen = pred.groupby("sample", sort=False)["split"].transform(lambda s: bool((s == "train").any()))
    return np.where(seen.to_numpy(bool) & (pred["split"] != "out").to_numpy(), "in", "out")


def per_sample_table(pred: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Per-sample metrics in the layout of the published table: samples as rows.

    Columns, by target then group: ``in/r2_md``, ``in/mse_md``, ``in/mae_md``,
    ``out/r2_md``, ..., then ``n_in`` and ``n_out`` (patches). NaN where a sample has
    no patches in a group.
    """
    groups = sample_groups(pred)
    rows = []
    samples = list(dict.fromkeys(pred["sample"]))
    for sample in samples:
        of_sample = (pred["sample"] == sample).to_numpy()
        row: dict[str, float] = {}
        for t in targets:
            for g in GROUPS:
                sel = pred[of_sample & (groups == g)]
                m = regression_metrics(sel[f"y_{t}"].to_numpy(), sel[f"yhat_{t}"].to_numpy())
                row.update({f"{g}/{name}_{t}": m[name] for name in METRICS})
        for g in GROUPS:
            row[f"n_{g}"] = int(np.sum(of_sample & (groups == g)))
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(samples, name="sample"))


def flat_metrics(
    per_split: pd.DataFrame, per_sample: pd.DataFrame | None = None, prefix: str = ""
) -> dict[str, float]:
    """Flat ``{prefix}{split}/{metric}_{target}`` dict of the finite metrics.

    Per sample only R² goes in, as ``{prefix}sample/<sample>/<in|out>/r2_<t>``. Counts
    (``n_*``) and NaN values are left out, so the dict is valid JSON for DVC metrics.
    """
    out: dict[str, float] = {}
    for split, row in per_split.iterrows():
        for col, value in row.items():
            if not col.startswith("n_") and np.isfinite(value):
                out[f"{prefix}{split}/{col}"] = float(value)
    if per_sample is not None:
        for sample, row in per_sample.iterrows():
            for col, value in row.items():
                if "/r2_" in col and np.isfinite(value):
                    out[f"{prefix}sample/{sample}/{col}"] = float(value)
    return out
