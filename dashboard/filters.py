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
FIELD_LABELS: dict[str, str] = {"y": "y", "y_hat": "ŷ", "delta": "Δ = ŷ − y", "rel_delta": "rΔ (%)"}


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
    target, samples, split, y, y_hat, delta, rel_delta, sort, desc = key
    table = catalog.tables.get(target)
    if table is None:
        return np.empty(0, dtype=np.int64)
    view = View(
        target=target, samples=samples, split=split, y=y, y_hat=y_hat, delta=delta, rel_delta=rel_delta
    )
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


def histogram_counts(catalog: Catalog, view: View, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(patches per bin passing every filter but this field's range, those also inside it).

    Bins span the slider's range; values beyond it fall into the end bins.
    """
    table = catalog.tables.get(view.target)
    if table is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
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
    return counts, counts_in


def histogram(catalog: Catalog, view: View, name: str) -> list[dict]:
    """Bars of field ``name`` as plain elements (grey: under the other filters; blue: also in
    the range): 40 columns, cheap for the browser to redraw, unlike a plot."""
    counts, counts_in = histogram_counts(catalog, view, name)
    top = max(int(counts.max()) if counts.size else 0, 1)
    return [
        {
            "type": "Div",
            "namespace": "dash_html_components",
            "props": {
                "className": "b",
                "style": {"height": f"{100.0 * c / top:.1f}%"},
                "children": {
                    "type": "Div",
                    "namespace": "dash_html_components",
                    "props": {"className": "i", "style": {"height": f"{100.0 * i / c if c else 0:.1f}%"}},
                },
            },
        }
        for c, i in zip(counts.tolist(), counts_in.tolist())
    ]
