"""Callbacks called directly: URL <-> controls, page content, histograms, viewer."""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np
import pytest

from histoxai.dashboard.callbacks import (
    apply_control,
    control_props,
    histograms,
    open_viewer,
    render,
    sync,
    update,
)
from histoxai.dashboard.catalog import FIELDS, load_catalog
from histoxai.dashboard.filters import select
from histoxai.dashboard.pages import el, to_html
from histoxai.dashboard.state import View, parse_view


def _q(search: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(search.lstrip("?")).items()}


def _nodes(component):
    """Every element of a page: Dash components and their JSON form (``pages.el``)."""
    if isinstance(component, (list, tuple)):
        for c in component:
            yield from _nodes(c)
    elif isinstance(component, dict) and "props" in component:
        yield component["type"], component["props"]
        yield from _nodes(component["props"].get("children"))
    elif hasattr(component, "to_plotly_json"):
        props = {
            k: getattr(component, k) for k in component._prop_names if getattr(component, k, None) is not None
        }
        yield type(component).__name__, props
        yield from _nodes(getattr(component, "children", None))


def _text(component) -> str:
    """All text of a page."""
    if isinstance(component, (str, int, float)):
        return str(component)
    out = []
    for _, props in _nodes(component):
        children = props.get("children")
        for c in children if isinstance(children, (list, tuple)) else [children]:
            if isinstance(c, (str, int, float)):
                out.append(str(c))
    return " ".join(out)


def _ids(component) -> list:
    return [p["data-key"] for _, p in _nodes(component) if "data-key" in p]


def _imgs(component, cls: str | None = "ov") -> list[dict]:
    return [p for tag, p in _nodes(component) if tag == "Img" and cls in (None, p.get("className"))]


def _srcs(component, cls: str | None = "ov") -> list[str]:
    return [p["src"] for p in _imgs(component, cls)]


def _style(props: dict) -> dict:
    return props.get("style") or {}


def test_url_drives_the_controls_without_rewriting_the_url(catalog):
    search = "?target=fa&variant=smoothgrad_s0.2&split=test&sort=absdelta&desc=1&y=0.2,"
    new, view, n_pages = sync(catalog, None, None, search, "/single")
    assert new is None
    props = control_props(catalog, view, n_pages)
    assert props[("target", "value")] == "fa" and props[("method", "value")] == "smoothgrad"
    assert props[("variant", "value")] == "smoothgrad_s0.2"
    assert [o["value"] for o in props[("variant", "options")]] == ["smoothgrad_s0.1", "smoothgrad_s0.2"]
    assert props[("split", "value")] == "test" and props[("desc", "value")] == ["desc"]
    assert props[("range-y", "value")][0] == 0.2
    assert props[("range-y", "value")][1] == catalog.tables["fa"].bounds["y"][1]
    assert props[("split", "options")] == ["all", "train", "val", "test"]  # only splits that exist


def test_a_control_change_becomes_a_url(catalog):
    new, view, _ = sync(catalog, "split", "val", "?target=md&variant=layercam&page=2", "/single")
    assert _q(new) == {"target": "md", "variant": "layercam", "split": "val"}  # filter change: page 1
    new, view, _ = sync(catalog, "method", "smoothgrad", new, "/single")
    assert view.variant == "smoothgrad_s0.1" and _q(new)["variant"] == "smoothgrad_s0.1"
    new, view, _ = sync(catalog, "target", "cc", new, "/single")
    assert (view.target, view.variant) == ("cc", "gradcampp")  # layercam is not computed for cc


def test_range_at_the_slider_ends_is_open(catalog):
    lo, hi = catalog.tables["md"].bounds["y"]
    view = apply_control(catalog, View(target="md", variant="gradcampp"), "range-y", [lo, hi])
    assert view.y == (None, None)
    mid = round((lo + hi) / 2, 3)  # inside the range, whatever the phantom's units
    view = apply_control(catalog, view, "range-y", [lo, mid])
    assert view.y == (None, mid)


def test_paging_moves_and_clamps(catalog):
    search = "?target=md&variant=gradcampp&per=24"
    new, view, n_pages = sync(catalog, "next", 1, search, "/single")
    assert view.page == 2 and n_pages == 3
    new, view, _ = sync(catalog, "page", 99, new, "/single")
    assert view.page == 99 and _q(new)["page"] == "3"  # the URL holds the clamped page
    out = update(catalog, "page", 99, search, "", "/single")
    assert "page 99 does not exist: showing page 3 of 3" in out[("status", "children")]
    assert out[("page", "value")] == 3
    new, view, _ = sync(catalog, "prev", 1, new, "/single")
    assert view.page == 2
    new, view, _ = sync(catalog, "reset", 1, new + "&split=test", "/single")
    assert view.page == 1 and view.split == "all"


def test_single_page_shows_one_tile_per_patch_of_the_page(catalog):
    children, status, pager = render(catalog, "/single", "?target=md&variant=layercam&per=24&page=2")
    keys = _ids(children)
    assert len(keys) == 24 and keys[0] == "24|md|layercam"
    assert status.startswith("50 of 50 patches match") and pager == "pager"
    srcs = _srcs(children)
    # one overlay sheet for the page: every tile shows its own row of it
    assert len(set(srcs)) == 1 and srcs[0].startswith("/img/overlay/mdfa/md/layercam.png?ids=24,25,")
    assert [_style(p) for p in _imgs(children)][:2] == [{"--i": 0, "--n": 24}, {"--i": 1, "--n": 24}]
    text = _text(children)
    assert "#24" in text and "ŷ" in text and "rΔ" in text


def test_multiple_targets_and_methods_pages_have_one_column_each(catalog):
    children, _, _ = render(catalog, "/targets", "?target=md&variant=gradcampp&per=24")
    srcs = _srcs(children)
    assert len(srcs) == 6 * 2 + 3  # 24 tiles = 6 patches x (raw + md + fa + cc); cc only for even ids
    cc = [s for s in srcs if "/cc/" in s]
    assert len(set(cc)) == 1 and "ids=0,2,4&" in cc[0]  # the cc sheet holds the patches cc explained
    assert "not explained for cc" in _text(children)
    children, _, _ = render(catalog, "/methods", "?target=md&variant=gradcampp&per=24")
    srcs = _srcs(children)
    assert len(srcs) == 4 * 4 and sum("/smoothgrad_s0.2.png" in s for s in srcs) == 4  # 24 // 5 patches


def test_main_page_names_what_is_loaded(catalog):
    children, status, pager = render(catalog, "/", "")
    text = _text(children)
    for word in (
        "Dataset",
        "phantom",
        "mdfa",
        "smoothgrad_s0.2",
        "sigma=0.2",
        "0.81",
        "md (baseline)",
        "R²",
        "trust layercam",
    ):
        assert word in text, word
    assert pager == "pager hidden"


def test_no_match_says_so(catalog):
    children, status, _ = render(catalog, "/single", "?target=md&y=100,200")
    assert "No patch matches" in _text(children) and status.startswith("0 of 50")


def test_missing_store_page_names_the_path(tmp_path):
    cat = load_catalog(tmp_path / "gone", saliency_root=tmp_path / "sal")
    for page in ("/", "/single", "/targets", "/methods"):
        children, _, _ = render(cat, page, "")
        text = _text(children)
        assert str(tmp_path / "gone") in text and "index.parquet" in text, page
    new, view, n_pages = sync(cat, None, None, "", "/single")
    props = control_props(cat, view, n_pages)
    assert props[("target", "options")] == [] and props[("target", "value")] is None
    assert histograms(cat, "") == [[], [], [], []]


def test_unknown_page_is_not_a_traceback(catalog):
    children, _, _ = render(catalog, "/nope", "")
    assert "Page not found" in _text(children)


def test_viewer_shows_raw_and_overlay_and_every_target(catalog):
    body = open_viewer(catalog, "4|fa|layercam", "?target=md", hash="#cmap=magma")
    assert _srcs(body, "big")[0] == "/img/patch.jpg?ids=4"
    assert "/fa/layercam.png?ids=4&cmap=magma" in _srcs(body, "ov")[0]
    text = _text(body)
    assert "Patch #4" in text and "md · mdfa" in text and "cc · cc" in text
    nodes = [p for _, p in _nodes(body)]
    prev = next(p for p in nodes if p.get("id") == "viewer-prev")
    nxt = next(p for p in nodes if p.get("id") == "viewer-next")
    assert prev["data-open"] == "3|fa|layercam" and nxt["data-open"] == "5|fa|layercam"
    switch = [p["data-open"] for p in nodes if "data-open" in p and p.get("id") is None]
    assert switch == [f"4|fa|{v}" for v in catalog.variants("fa")]
    assert open_viewer(catalog, None, "") == []
    assert open_viewer(catalog, "4|fa|evil", "") == []


def test_viewer_steps_in_the_grid_order(catalog):
    search = "?target=md&variant=gradcampp&sort=y&desc=1"
    order = catalog.tables["md"].patch_id[select(catalog, parse_view(search, catalog))]
    body = open_viewer(catalog, f"{order[0]}|md|gradcampp", search)
    nodes = {p.get("id"): p for _, p in _nodes(body) if p.get("id")}
    assert (
        nodes["viewer-prev"].get("disabled")
        and nodes["viewer-next"]["data-open"] == f"{order[1]}|md|gradcampp"
    )


def test_after_a_control_only_what_changed_is_sent(catalog):
    search = "?target=md&variant=gradcampp"
    first = update(catalog, None, None, search, "", "/single")
    assert ("range-y", "value") in first and ("hist-html", "data") in first
    out = update(catalog, "next", 1, search, "", "/single")
    assert ("hist-html", "data") not in out  # same filters: histograms stay
    assert ("target", "options") not in out and ("range-y", "min") not in out
    assert _q(out[("url", "search")])["page"] == "2" and out[("page", "value")] == 2
    assert ("hist-html", "data") not in update(catalog, "desc", True, search, "", "/single")  # order only
    out = update(catalog, "split", "test", search, "", "/single")
    assert ("hist-html", "data") in out and _q(out[("url", "search")])["split"] == "test"
    assert ("grid-html", "data") not in update(catalog, "split", "test", search, "", "/")


@pytest.mark.parametrize("field", ["y", "y_hat", "delta", "rel_delta"])
def test_histograms_follow_the_url(catalog, field):
    all_bars = histograms(catalog, "?target=md")[FIELDS.index(field)]
    test_bars = histograms(catalog, "?target=md&split=test")[FIELDS.index(field)]
    assert len(all_bars) == len(test_bars) == 40 and all_bars != test_bars


def test_grids_go_as_html_text_and_the_main_page_as_components(catalog):
    out = update(catalog, None, None, "?target=md&variant=layercam&per=24", "#cmap=magma", "/single")
    html = out[("grid-html", "data")]
    assert out[("page-dash", "children")] == [] and html.count('class="tile"') == 24
    assert 'data-key="0|md|layercam"' in html and "cmap=magma" in html and "&lt;" not in html
    out = update(catalog, None, None, "", "", "/")
    assert out[("grid-html", "data")] == "" and out[("page-dash", "children")]
    assert update(catalog, None, None, "?y=100,200", "", "/single")[("grid-html", "data")] == ""


def test_to_html_escapes_text_and_attributes():
    node = el(
        "Div",
        ["<b>", el("Img", src='/a?x=1&y="2"', alt="")],
        className="t",
        style={"gridTemplateColumns": "1fr", "--tile": "9px"},
    )
    assert to_html(node) == (
        '<div class="t" style="grid-template-columns:1fr;--tile:9px">&lt;b&gt;'
        '<img src="/a?x=1&amp;y=&quot;2&quot;" alt=""></div>'
    )


def test_sorting_by_a_per_patch_metric_finds_failures(catalog):
    search = "?target=md&variant=layercam&sort=m:mass_accuracy"
    view = parse_view(search, catalog)
    assert view.sort == "m:mass_accuracy"
    rows = select(catalog, view)
    acc = catalog.tables["md"].metrics["layercam"]["mass_accuracy"][rows]
    n = int(np.isfinite(acc).sum())
    assert (np.diff(acc[:n]) >= 0).all() and np.isnan(acc[n:]).all()  # worst first, unscored last
    out = update(catalog, None, None, search, "", "/single")
    assert {"label": "mass_accuracy (xai-eval)", "value": "m:mass_accuracy"} in out[("sort", "options")]
    assert "mass_accuracy 0" in out[("grid-html", "data")]
    assert parse_view("?target=md&variant=layercam&sort=m:nope", catalog).sort == "id"
    assert parse_view("?target=md&variant=smoothgrad_s0.1&sort=m:mass_accuracy", catalog).sort == "id"
    body = open_viewer(catalog, "3|md|layercam", search)
    assert "mass_accuracy" in _text(body) and "deletion_auc" in _text(body)


def test_a_brush_sets_range_filters_and_clearing_it_opens_them(catalog):
    view = View(target="md", variant="gradcampp", page=3)
    box = {"range": {"x": [1.6, 1.2], "y": [1.1, 1.7]}}
    view = apply_control(catalog, view, "brush-fit", box)
    assert (view.y, view.y_hat, view.page) == ((1.2, 1.6), (1.1, 1.7), 1)
    view = apply_control(catalog, view, "brush-delta", {"range": {"x": [1.0, 2.0], "y": [-0.01, 0.02]}})
    assert view.delta == (-0.01, 0.02) and view.y == (1.0, 2.0)
    view = apply_control(catalog, view, "brush-fit", None)
    assert view.y == (None, None) and view.y_hat == (None, None) and view.delta == (-0.01, 0.02)
    assert apply_control(catalog, view, "brush-fit", {"lassoPoints": {}}).y_hat == (None, None)
