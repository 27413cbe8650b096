"""Regression metrics per split and per sample, named ``split/metric_target`` (``test/r2_md``).

R² is reported three ways, each under its own name:

- ``r2``: coefficient of determination, 1 - SS_res / SS_tot (a biased prediction is
  penalised for its bias);
- ``ev``: explained variance, 1 - var(y - ŷ) / var(y) (Lank 2024, Eq. 3.2, the
  thesis' "R²"; blind to a constant bias, so ``ev >= r2``);
- ``r2within``: within-sample R², 1 - Σ_s Σ_i ((ŷ_i - ŷ̄_s) - (y_i - ȳ_s))² /
  Σ_s Σ_i (y_i - ȳ_s)², the share of the variation *inside* each sample that the
  predictions follow. A per-sample offset costs nothing and predicting each sample's mean
  scores exactly 0, so a model that only recognises the sample cannot score here.

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

METRICS: tuple[str, ...] = ("r2", "ev", "mse", "mae")
SPLIT_METRICS: tuple[str, ...] = ("r2", "ev", "r2within", "mse", "mae")
GROUPS: tuple[str, ...] = ("in", "out")


def regression_metrics(
    y: np.ndarray, yhat: np.ndarray, samples: np.ndarray | None = None
) -> dict[str, float]:
    """R² (``r2``), explained variance (``ev``), MSE and MAE of ``yhat`` against ``y``
    over the pairs where both are finite; with ``samples`` also ``r2within``.

    ``r2`` = 1 - SS_res / SS_tot with SS_tot about the mean of ``y`` in this subset, so
    predicting that mean gives 0 and perfect predictions give 1; ``ev`` = 1 - var(y - ŷ)
    / var(y) (see the module docstring). Both are NaN for fewer than two pairs or
    constant ``y``; all metrics are NaN without pairs.

    Returns:
        ``{"r2", "ev", "mse", "mae", "n"}`` (+ ``"r2within"`` with ``samples``).
    """
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    out: dict[str, float] = {"r2": np.nan, "ev": np.nan, "mse": np.nan, "mae": np.nan, "n": 0}
    if samples is not None:
        out["r2within"] = within_sample_r2(y, yhat, np.asarray(samples)[ok])
    if y.size == 0:
        return out
    residual = yhat - y
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if y.size >= 2 and ss_tot > 0:
        out["r2"] = 1.0 - ss_res / ss_tot
        out["ev"] = 1.0 - float(np.var(residual)) / float(np.var(y))
    out.update(mse=ss_res / y.size, mae=float(np.mean(np.abs(residual))), n=int(y.size))
    return out


def within_sample_r2(y: np.ndarray, yhat: np.ndarray, samples: np.ndarray) -> float:
    """``r2within``: R² of the predictions after removing each sample's mean from ``y``
    and from ``yhat`` (module docstring). Samples with one pair add nothing; NaN when no
    sample varies. Expects finite ``y`` and ``yhat``."""
    y, yhat = np.asarray(y, np.float64), np.asarray(yhat, np.float64)
    if y.size == 0:
        return np.nan
    codes = pd.factorize(np.asarray(samples))[0]
    count = np.bincount(codes)
    dy = y - (np.bincount(codes, y) / count)[codes]
    dyhat = yhat - (np.bincount(codes, yhat) / count)[codes]
    ss_tot = float(np.sum(dy**2))
    return 1.0 - float(np.sum((dyhat - dy) ** 2)) / ss_tot if ss_tot > 0 else np.nan


def _row(frame: pd.DataFrame, targets: Sequence[str]) -> dict[str, float]:
    row: dict[str, float] = {}
    for t in targets:
        m = regression_metrics(
            frame[f"y_{t}"].to_numpy(), frame[f"yhat_{t}"].to_numpy(), frame["sample"].to_numpy()
        )
        row.update({f"{name}_{t}": m[name] for name in SPLIT_METRICS})
        row[f"n_{t}"] = m["n"]
    return row


def per_split_table(pred: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Metrics per split present in ``pred`` (rows ``train``, ``val``, ``test``, ``out``).

    Columns ``r2_<t>``, ``ev_<t>``, ``r2within_<t>``, ``mse_<t>``, ``mae_<t>``, ``n_<t>``
    per target.
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

    Columns, by target then group: ``in/r2_md``, ``in/ev_md``, ``in/mse_md``,
    ``in/mae_md``, ``out/r2_md``, ..., then ``n_in`` and ``n_out`` (patches). NaN where a sample has
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
