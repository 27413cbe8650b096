"""Figures of the evaluation report: predicted-vs-measured scatter plots and per-sample
maps of measured, predicted and residual values drawn back on the voxel grid.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global state),
so they render headless and in threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from histoxai.data.store import SPLITS
from histoxai.evaluation.metrics import regression_metrics

LABELS: dict[str, str] = {
    "md": "MD (µm²/ms)",
    "fa": "FA",
    "faip": "in-plane FA",
    "cc": "cc (nuclei per patch)",
}
"""Axis label of each target, with its unit."""


def label(target: str) -> str:
    return LABELS.get(target, target)


def voxel_grid(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Values drawn back on the voxel grid: ``grid[row, col] = value``, NaN elsewhere.

    Args:
        rows, cols: (N,) voxel positions.
        values: (N,) values.
        shape: grid shape; default ``(max row + 1, max col + 1)``.
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if shape is None:
        shape = (int(rows.max()) + 1 if rows.size else 0, int(cols.max()) + 1 if cols.size else 0)
    grid = np.full(shape, np.nan)
    grid[rows, cols] = values
    return grid


def sample_maps(pred: pd.DataFrame, sample: str, targets: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Measured, predicted and residual (predicted - measured) grids of one sample.

    Returns:
        ``{target: {"measured", "predicted", "residual"}}``, each (rows, cols) with NaN
        where the sample has no patch.
    """
    sel = pred[pred["sample"] == sample]
    if sel.empty:
        raise ValueError(f"no predictions for sample {sample!r}")
    r, c = sel["row"].to_numpy(), sel["col"].to_numpy()
    shape = (int(r.max()) + 1, int(c.max()) + 1)
    maps = {}
    for t in targets:
        y, yhat = sel[f"y_{t}"].to_numpy(np.float64), sel[f"yhat_{t}"].to_numpy(np.float64)
        maps[t] = {
            "measured": voxel_grid(r, c, y, shape),
            "predicted": voxel_grid(r, c, yhat, shape),
            "residual": voxel_grid(r, c, yhat - y, shape),
        }
    return maps


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def plot_sample_maps(
    pred: pd.DataFrame, sample: str, targets: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One figure per sample: targets as rows, measured / predicted / residual as columns."""
    maps = sample_maps(pred, sample, targets)
    rows, cols = next(iter(maps.values()))["measured"].shape
    cell = 3.0 * min(1.5, max(0.6, cols / max(rows, 1)))
    fig = Figure(figsize=(3 * cell + 1.5, 3.0 * len(targets) + 0.6), layout="constrained")
    axes = fig.subplots(len(targets), 3, squeeze=False)
    for i, t in enumerate(targets):
        m = maps[t]
        lo, hi = _limits(m["measured"], m["predicted"])
        res = np.abs(m["residual"][np.isfinite(m["residual"])])
        lim = float(np.percentile(res, 99)) if res.size and np.percentile(res, 99) > 0 else 1.0
        viridis, diverging = (
            colormaps["viridis"].with_extremes(bad="0.85"),
            colormaps["RdBu_r"].with_extremes(bad="0.85"),
        )
        for j, (key, cmap, vmin, vmax) in enumerate(
            [
                ("measured", viridis, lo, hi),
                ("predicted", viridis, lo, hi),
                ("residual", diverging, -lim, lim),
            ]
        ):
            ax = axes[i, j]
            im = ax.imshow(m[key], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            name = "residual (predicted − measured)" if key == "residual" else key
            ax.set_title(f"{name}\n{label(t)}", fontsize=9)
            ax.set_xlabel("col (voxel)", fontsize=8)
            ax.set_ylabel("row (voxel)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # voxel indices
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if j >= 1:
                fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    fig.suptitle(title or f"sample {sample}", fontsize=11)
    return _save(fig, path)


def plot_scatter(
    frames: Mapping[str, pd.DataFrame],
    target: str,
    path: str | Path,
    title: str = "",
    max_points: int = 4000,
    seed: int = 0,
) -> Path:
    """Predicted vs measured ``target``: one row per model (e.g. CNN, baseline), one
    column per split; points coloured by sample, identity line, R² in each title."""
    first = next(iter(frames.values()))
    splits = [s for s in SPLITS if (first["split"] == s).any()]
    samples = list(dict.fromkeys(first["sample"]))
    palette = colormaps["tab10" if len(samples) <= 10 else "tab20"]
    colour = {s: palette(i % palette.N) for i, s in enumerate(samples)}
    columns = [f"y_{target}", f"yhat_{target}"]
    values = np.concatenate([f[c].to_numpy(np.float64) for f in frames.values() for c in columns])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - pad, hi + pad
    fig = Figure(figsize=(3.2 * len(splits) + 1.8, 3.3 * len(frames) + 0.5), layout="constrained")
    axes = fig.subplots(len(frames), len(splits), squeeze=False, sharex=True, sharey=True)
    rng = np.random.default_rng(seed)
    for i, (model, frame) in enumerate(frames.items()):
        for j, split in enumerate(splits):
            ax = axes[i, j]
            sel = frame[frame["split"] == split]
            m = regression_metrics(sel[columns[0]].to_numpy(), sel[columns[1]].to_numpy())
            if len(sel) > max_points:  # plot a subsample; metrics use every patch
                sel = sel.iloc[np.sort(rng.choice(len(sel), max_points, replace=False))]
            ax.scatter(
                sel[columns[0]], sel[columns[1]], s=8, alpha=0.6, linewidths=0,
                c=[colour[s] for s in sel["sample"]], rasterized=True,
            )  # fmt: skip
            ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.set_title(f"{model}, {split}: R² = {m['r2']:.3f} (n = {m['n']})", fontsize=9)
            ax.set_xlabel(f"measured {label(target)}", fontsize=8)
            ax.set_ylabel(f"predicted {label(target)}", fontsize=8)
            ax.tick_params(labelsize=7)
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[s], label=s) for s in samples]
    handles.append(Line2D([], [], color="black", linestyle="--", label="identity"))
    fig.legend(handles=handles, loc="outside right upper", title="sample", fontsize=8, title_fontsize=8)
    fig.suptitle(title or f"predicted vs measured {label(target)}", fontsize=11)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
