"""Filtering, sorting, paging and histograms on the target tables."""

from __future__ import annotations

import numpy as np

from dashboard.filters import histogram, histogram_counts, page_of, rows_per_page, select
from dashboard.state import View


def _view(catalog, **kw) -> View:
    return View(target="md", variant="gradcampp", **kw)


def test_every_filter_narrows_to_matching_patches(catalog):
    md = catalog.tables["md"]
    everything = select(catalog, _view(catalog))
    assert len(everything) == len(md)
    lo = float(np.median(md.values["y"]))
    rows = select(catalog, _view(catalog, y=(lo, None)))
    assert 0 < len(rows) < len(md) and (md.values["y"][rows] >= lo).all()
    rows = select(catalog, _view(catalog, split="test", samples=("s2",)))
    assert len(rows) > 0
    assert (md.split[rows] == 2).all() and {md.sample_names[c] for c in md.sample[rows]} == {"s2"}
    rows = select(catalog, _view(catalog, delta=(0.0, None), rel_delta=(None, 1.0)))
    assert (md.values["delta"][rows] >= 0).all() and (md.values["rel_delta"][rows] <= 1.0).all()


def test_impossible_filter_gives_no_rows(catalog):
    assert len(select(catalog, _view(catalog, y=(1e9, None)))) == 0


def test_sort_orders(catalog):
    md = catalog.tables["md"]
    by_id = select(catalog, _view(catalog))
    assert (np.diff(md.patch_id[by_id]) > 0).all()
    by_y = select(catalog, _view(catalog, sort="y", desc=True))
    assert (np.diff(md.values["y"][by_y]) <= 0).all()
    by_abs = select(catalog, _view(catalog, sort="absdelta", desc=True))
    assert (np.diff(np.abs(md.values["delta"][by_abs])) <= 0).all()
    by_rel = select(catalog, _view(catalog, sort="absrel"))
    assert (np.diff(np.abs(md.values["rel_delta"][by_rel])) >= 0).all()


def test_paging_clamps_and_slices(catalog):
    view = View(per=10, page=9)
    assert page_of(25, view, 10) == (3, 3, slice(20, 25))
    assert page_of(0, view, 10) == (1, 1, slice(0, 0))
    assert rows_per_page(catalog, View(target="md", per=48), "/single") == 48
    assert rows_per_page(catalog, View(target="md", per=48), "/methods") == 48 // 5  # raw + 4 variants


def test_histogram_counts_the_other_filters_and_highlights_the_range(catalog):
    md = catalog.tables["md"]
    lo = float(np.median(md.values["y"]))
    all_bars, in_range = histogram_counts(catalog, _view(catalog, y=(lo, None)), "y")
    assert all_bars.sum() == len(md)  # its own range does not shrink the field's histogram
    assert in_range.sum() == int((md.values["y"] >= lo).sum())
    all_bars, _ = histogram_counts(catalog, _view(catalog, y=(lo, None), split="test"), "delta")
    assert all_bars.sum() == int(((md.values["y"] >= lo) & (md.split == 2)).sum())
    bars = histogram(catalog, _view(catalog, y=(lo, None)), "y")
    assert len(bars) == 40 and max(float(b["props"]["style"]["height"][:-1]) for b in bars) == 100.0
