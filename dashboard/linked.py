"""Linked views: y against ŷ and Δ against y for the filtered patches, whose box brush
sets the y, ŷ and Δ range filters (so the grid, the histograms and the URL follow), and
per sample voxel maps of y, ŷ and Δ where a click opens the voxel's patch and the open
patch's voxel is ringed. The grid of the current page is below.
"""

from __future__ import annotations

import numpy as np
from dash import dcc, html

from dashboard.catalog import Catalog, TargetTable
from dashboard.filters import mask, select
from dashboard.pages import el, heading, legend, single_page, tile_key
from dashboard.state import View

MAX_POINTS = 4000
"""Points drawn per scatter (evenly spaced over the rows beyond that)."""
PLOTS = {"fit": ("y", "y_hat", "y", "ŷ"), "delta": ("y", "delta", "y", "Δ = ŷ − y")}
"""Brush plot -> (x field, y field, x label, y label)."""
VOXEL_FIELDS = {"y": "y", "y_hat": "ŷ", "delta": "Δ"}


def _thin(rows: np.ndarray) -> np.ndarray:
    return rows if len(rows) <= MAX_POINTS else rows[np.linspace(0, len(rows) - 1, MAX_POINTS).astype(int)]


def _axis(title: str) -> dict:
    return {"title": {"text": title, "font": {"size": 11}}, "zeroline": False, "gridcolor": "#eef0f3"}


def scatter_figure(
    table: TargetTable, view: View, plot: str, context: np.ndarray, matched: np.ndarray
) -> dict:
    """Grey: patches of the chosen samples and split; blue: those passing every filter."""
    fx, fy, lx, ly = PLOTS[plot]
    x, y = table.values[fx], table.values[fy]
    traces = []
    for rows, colour, name in (
        (_thin(context), "#d5dbe3", "other filters"),
        (_thin(matched), "#3f6fb5", "shown"),
    ):
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": x[rows].round(6).tolist(),
                "y": y[rows].round(6).tolist(),
                "customdata": table.patch_id[rows].tolist(),
                "marker": {"size": 4, "color": colour},
                "name": name,
                "hoverinfo": "skip",
            }
        )
    layout = {
        "height": 300,
        "margin": {"l": 52, "r": 10, "t": 28, "b": 40},
        "dragmode": "select",
        "showlegend": False,
        "title": {"text": f"{ly} against {lx} · drag a box to filter", "font": {"size": 12}, "x": 0.02},
        "xaxis": _axis(lx),
        "yaxis": _axis(ly),
        "plot_bgcolor": "#fff",
    }
    if plot == "fit":
        finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            layout["shapes"] = [
                {
                    "type": "line",
                    "x0": lo,
                    "y0": lo,
                    "x1": hi,
                    "y1": hi,
                    "line": {"color": "#9aa5b1", "dash": "dot", "width": 1},
                }
            ]
    return {"data": traces, "layout": layout}


def voxel_figure(table: TargetTable, sample_code: int, field: str, view: View) -> dict:
    """Heatmap of ``field`` over the sample's voxel grid; customdata: the tile key per voxel."""
    rows = np.flatnonzero(table.sample == sample_code)
    grid = table.grid.iloc[rows]
    r, c = grid["row"].to_numpy(int), grid["col"].to_numpy(int)
    z = np.full((r.max() + 1, c.max() + 1), np.nan) if len(rows) else np.zeros((1, 1))
    keys = np.full(z.shape, "", dtype=object)
    if len(rows):
        z[r, c] = table.values[field][rows]
        keys[r, c] = [tile_key(p, table.key, view.variant) for p in table.patch_id[rows].tolist()]
    z_list = [[None if not np.isfinite(v) else round(float(v), 6) for v in line] for line in z]
    ring = {
        "type": "scatter",
        "mode": "markers",
        "x": [],
        "y": [],
        "hoverinfo": "skip",
        "marker": {"symbol": "square-open", "size": 14, "color": "#e11d48", "line": {"width": 3}},
    }
    if view.open:
        hit = np.argwhere(keys == view.open) if view.open.split("|")[1:2] == [table.key] else []
        if len(hit):
            ring["x"], ring["y"] = [int(hit[0][1])], [int(hit[0][0])]
    diverging = field == "delta"
    heat = {
        "type": "heatmap",
        "z": z_list,
        "customdata": keys.tolist(),
        "colorscale": "RdBu" if diverging else "Viridis",
        "reversescale": False,
        "zmid": 0 if diverging else None,
        "colorbar": {"thickness": 8, "len": 0.9},
        "hovertemplate": f"{VOXEL_FIELDS[field]} %{{z:.3g}}<br>row %{{y}}, col %{{x}}<extra></extra>",
    }
    return {
        "data": [heat, ring],
        "layout": {
            "height": 260,
            "margin": {"l": 30, "r": 10, "t": 26, "b": 24},
            "title": {
                "text": f"{VOXEL_FIELDS[field]} · {table.sample_names[sample_code]} · click a voxel",
                "font": {"size": 12},
                "x": 0.02,
            },
            "yaxis": {"autorange": "reversed", "scaleanchor": "x", "constrain": "domain"},
            "xaxis": {"constrain": "domain"},
            "showlegend": False,
        },
    }


def linked_page(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    matched = select(catalog, view)
    context_view = view.replace(
        y=(None, None), y_hat=(None, None), delta=(None, None), rel_delta=(None, None)
    )
    context = np.flatnonzero(mask(table, context_view))
    graphs = [
        dcc.Graph(
            id={"type": "brush", "plot": plot},
            figure=scatter_figure(table, view, plot, context, matched),
            config={"displayModeBar": False, "doubleClick": "reset"},
            className="brush-plot",
        )
        for plot in PLOTS
    ]
    codes = [i for i, s in enumerate(table.sample_names) if s in view.samples] or sorted(
        set(table.sample.tolist())
    )[:1]
    voxels = (
        [
            dcc.Graph(
                id={"type": "voxel", "field": f},
                figure=voxel_figure(table, codes[0], f, view),
                config={"displayModeBar": False},
                className="voxel-map",
            )
            for f in VOXEL_FIELDS
        ]
        if codes
        else []
    )
    grid = single_page(catalog, view, table, shown)
    label = catalog.variant_label(view.target, view.variant)
    return [
        heading(
            f"{catalog.target_label(view.target)} · {label}",
            "Linked views",
            legend(table, view.variant, view),
        ),
        html.Div(graphs, className="linked-row"),
        html.Div(voxels, className="linked-row voxels"),
        el("H3", "Patches shown", className="section-title"),
        *grid[1:],
    ]
