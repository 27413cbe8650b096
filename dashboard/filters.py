"""Which patches a view shows, in which order, and the histograms of the filtered fields.

All work is vectorised over one :class:`~dashboard.catalog.TargetTable`; the result of a
filter is cached per catalog and filter key, so paging and display changes cost nothing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from dashboard.catalog import FIELDS, Catalog, TargetTable
from dashboard.state import View
from histoxai.data.store import SPLITS

HIST_BINS = 40
FIELD_LABELS: dict[str, str] = {"y": "y", "delta": "Δ = ŷ − y", "rel_delta": "rΔ (%)"}


def mask(table: TargetTable, view: View, skip: str | None = None) -> np.ndarray:
    """Boolean (n,) mask of the rows passing every filter of ``view`` except ``skip``'s range."""
    keep = np.ones(len(table), dtype=bool)
    if view.samples:
        codes = [i for i, s in enumerate(table.sample_names) if s in view.samples]
        keep &= np.isin(table.sample, codes)
    if view.split != "all":
        keep &= table.split == SPLITS.index(view.split)
    for name in FIELDS:
        lo, hi = view.range(name)
        if name == skip or (lo is None and hi is None):
            continue
        x = table.values[name]
        # NaN compares False: a patch without a value never passes a bounded filter.
        if lo is not None:
            keep &= x >= lo
        if hi is not None:
            keep &= x <= hi
    return keep


def select(catalog: Catalog, view: View) -> np.ndarray:
    """Rows of the view's target table that match, in the view's order (cached)."""
    return _select(catalog, view.filter_key())


@lru_cache(maxsize=256)
def _select(catalog: Catalog, key: tuple) -> np.ndarray:
    target, samples, split, y, delta, rel_delta, sort, desc = key
    table = catalog.tables.get(target)
    if table is None:
        return np.empty(0, dtype=np.int64)
    view = View(target=target, samples=samples, split=split, y=y, delta=delta, rel_delta=rel_delta)
    rows = np.flatnonzero(mask(table, view))
    if sort == "id":
        order = table.patch_id[rows]
    elif sort == "y":
        order = table.values["y"][rows]
    else:
        order = np.abs(table.values["delta" if sort == "absdelta" else "rel_delta"][rows])
    if desc:
        order = -order
    # Stable sort; NaN sorts last in both directions.
    rows = rows[np.argsort(order, kind="stable")]
    return rows


def rows_per_page(catalog: Catalog, view: View, pathname: str) -> int:
    """Patches per page: ``view.per`` tiles, each patch one tile on the grid and a group of
    (raw + one per target or method variant) tiles on the multi-column pages."""
    if pathname == "/targets":
        return max(1, view.per // (len(catalog.tables) + 1))
    if pathname == "/methods":
        return max(1, view.per // (len(catalog.variants(view.target)) + 1))
    return view.per


def page_of(n: int, view: View, per: int) -> tuple[int, int, slice]:
    """(page clamped to 1..n_pages, n_pages, slice of the page) for ``n`` matches."""
    n_pages = max(1, math.ceil(n / per))
    page = min(max(1, view.page), n_pages)
    return page, n_pages, slice((page - 1) * per, min(page * per, n))


def histogram(catalog: Catalog, view: View, name: str) -> dict:
    """Plotly figure (plain dict, no validation cost) of field ``name`` under the other filters.

    Grey bars: patches passing every filter but this field's range; blue bars: those also
    inside the range. The x range is the slider's range; values beyond it fall into the
    end bins.
    """
    table = catalog.tables.get(view.target)
    if table is None:
        return empty_figure()
    lo, hi = table.bounds[name]
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    x = table.values[name][mask(table, view, skip=name)]
    x = x[np.isfinite(x)]
    clipped = np.clip(x, lo, hi)
    counts, _ = np.histogram(clipped, bins=edges)
    rlo, rhi = view.range(name)
    inside = np.ones(x.shape, dtype=bool)
    if rlo is not None:
        inside &= x >= rlo
    if rhi is not None:
        inside &= x <= rhi
    counts_in, _ = np.histogram(clipped[inside], bins=edges)
    centres = ((edges[:-1] + edges[1:]) / 2).round(6).tolist()
    width = float(edges[1] - edges[0])
    bars = dict(type="bar", x=centres, width=width, hoverinfo="skip")
    return {
        "data": [
            {**bars, "y": counts.tolist(), "marker": {"color": "#d5dbe3"}},
            {**bars, "y": counts_in.tolist(), "marker": {"color": "#3f6fb5"}},
        ],
        "layout": {
            "barmode": "overlay",
            "bargap": 0,
            "height": 44,
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "xaxis": {"visible": False, "range": [lo, hi], "fixedrange": True},
            "yaxis": {"visible": False, "fixedrange": True},
            "showlegend": False,
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
        },
    }


def empty_figure() -> dict:
    return {
        "data": [],
        "layout": {
            "height": 44,
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
        },
    }
