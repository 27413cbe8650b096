"""Callbacks. The URL is the single source of truth (see :mod:`histoxai.dashboard.state`):

- :func:`update` (server, one round trip per filter change): a filter control or a new
  query string (page load, Back, a shared link, a page link) -> the new query string, the
  page content, the status line, the histograms and the control values that changed;
- display controls (opacity, colour map, sign, scale, clipping, tile size) are handled in
  the browser (``assets/dashboard.js``): they rewrite the URL fragment, the overlay image
  URLs and CSS variables, and never ask for a new grid;
- :func:`open_viewer` (server) draws the enlarged tile named by ``#open=`` in the fragment;
  a tile click, the arrow keys, Escape and a backdrop click only change the fragment.

Each server callback is a plain function of the catalog and the inputs, so tests and the
benchmark call them directly; :func:`register` wires them into a Dash app.
"""

from __future__ import annotations

import json
import math
from typing import Any

from dash import ALL, ClientsideFunction, Dash, Input, Output, State, ctx, no_update

from histoxai.dashboard.catalog import FIELDS, Catalog, nice_step
from histoxai.dashboard.filters import histogram, page_of, rows_per_page, select
from histoxai.dashboard.layout import DISPLAY_CONTROLS
from histoxai.dashboard.linked import PLOTS
from histoxai.dashboard.main_page import main_page
from histoxai.dashboard.pages import fmt, grid_page, is_elements, message, to_html, viewer_body
from histoxai.dashboard.sitemap import PAGES
from histoxai.dashboard.state import View, parse_view, sort_choices, view_query

OPEN = (None, None)
CONTROLS: dict[str, str] = {
    "target": "value",
    "method": "value",
    "variant": "value",
    "samples": "value",
    "split": "value",
    **{f"range-{name}": "value" for name in FIELDS},
    "sort": "value",
    "desc": "value",
    "per": "value",
    "page": "value",
    "prev": "n_clicks",
    "next": "n_clicks",
    "reset": "n_clicks",
}
"""Inputs of :func:`update`: component id -> property."""
PAGE_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("url", "search"),
    ("page-dash", "children"),
    ("grid-html", "data"),
    ("status", "children"),
    ("pager", "className"),
    ("hist-html", "data"),
)


def apply_control(catalog: Catalog, view: View, trigger: str, value: Any) -> View:
    """The view after control ``trigger`` took ``value`` (invalid values change nothing)."""
    if trigger == "target" and value in catalog.tables:
        variants = catalog.variants(value)
        variant = view.variant if view.variant in variants else (variants[0] if variants else "")
        return view.replace(
            target=value, variant=variant, y=OPEN, y_hat=OPEN, delta=OPEN, rel_delta=OPEN, page=1
        )
    if trigger == "method":
        variants = catalog.methods(view.target).get(value, [])
        return view.replace(variant=variants[0]) if variants and view.variant not in variants else view
    if trigger == "variant" and value in catalog.variants(view.target):
        return view.replace(variant=value)
    if trigger == "samples":
        return view.replace(samples=tuple(s for s in (value or ()) if s in catalog.samples), page=1)
    if trigger == "split" and value in ("all", *catalog.splits):
        return view.replace(split=value, page=1)
    if trigger.startswith("range-") and trigger[6:] in FIELDS and view.target in catalog.tables:
        name = trigger[6:]
        lo, hi = catalog.tables[view.target].bounds[name]
        half = nice_step(lo, hi) / 2
        a, b = (float(v) for v in value) if value and len(value) == 2 else (lo, hi)
        return view.replace(**{name: (None if a <= lo + half else a, None if b >= hi - half else b)}, page=1)
    if trigger == "sort":
        return (
            view.replace(sort=value, page=1)
            if value in sort_choices(catalog, view.target, view.variant)
            else view
        )
    if trigger == "desc":
        return view.replace(desc=bool(value), page=1)
    if trigger == "per" and isinstance(value, int) and value > 0:
        return view.replace(per=value, page=1)
    if trigger == "page" and isinstance(value, (int, float)) and math.isfinite(value):
        return view.replace(page=max(1, int(value)))
    if trigger in ("prev", "next"):
        return view.replace(page=max(1, view.page + (1 if trigger == "next" else -1)))
    if trigger.startswith("brush-") and trigger[6:] in PLOTS:
        fx, fy = PLOTS[trigger[6:]][:2]
        box = (value or {}).get("range") if isinstance(value, dict) else None
        if not box or "x" not in box or "y" not in box:
            return view.replace(**{fx: OPEN, fy: OPEN}, page=1)  # cleared (double click) or a lasso
        (x0, x1), (y0, y1) = sorted(map(float, box["x"])), sorted(map(float, box["y"]))
        return view.replace(**{fx: (x0, x1), fy: (y0, y1)}, page=1)
    if trigger == "reset":
        return view.replace(samples=(), split="all", y=OPEN, y_hat=OPEN, delta=OPEN, rel_delta=OPEN, page=1)
    return view


def n_pages_of(catalog: Catalog, view: View, pathname: str) -> int:
    n = len(select(catalog, view)) if view.target else 0
    return page_of(n, view, rows_per_page(catalog, view, pathname))[1]


def sync(
    catalog: Catalog,
    trigger: str | None,
    value: Any,
    search: str,
    pathname: str,
    default_per: int = 48,
    hash: str = "",
) -> tuple[str | None, View, int]:
    """(new query string or None to keep the URL, the view, number of pages).

    ``trigger`` is the id of the control that changed (``None`` or ``url``: the URL
    changed and the controls follow it). The view's page is the requested one (the grid
    clamps it and says so); the query string holds the clamped page.
    """
    view = parse_view(search, catalog, default_per, hash)
    if trigger not in (None, "url"):
        view = apply_control(catalog, view, trigger, value)
    n_pages = n_pages_of(catalog, view, pathname)
    shown = view.replace(page=min(view.page, n_pages))
    new_search = None if trigger in (None, "url") else view_query(shown, default_per)
    return new_search, view, n_pages


def control_props(catalog: Catalog, view: View, n_pages: int) -> dict[tuple[str, str], Any]:
    """Every control property :func:`update` sets, for ``view``."""
    methods = catalog.methods(view.target) if view.target else {}
    method = next((m for m, vs in methods.items() if view.variant in vs), None)
    out: dict[tuple[str, str], Any] = {
        ("target", "options"): [{"label": catalog.target_label(k), "value": k} for k in catalog.tables],
        ("target", "value"): view.target or None,
        ("method", "options"): list(methods),
        ("method", "value"): method,
        ("variant", "options"): [
            {"label": catalog.variant_label(view.target, v), "value": v} for v in methods.get(method, [])
        ],
        ("variant", "value"): view.variant or None,
        ("samples", "options"): catalog.samples,
        ("samples", "value"): list(view.samples),
        ("split", "options"): ["all", *catalog.splits],
        ("split", "value"): view.split,
        ("sort", "options"): [
            {"label": v, "value": k} for k, v in sort_choices(catalog, view.target, view.variant).items()
        ],
        ("sort", "value"): view.sort,
        ("desc", "value"): ["desc"] if view.desc else [],
        ("per", "value"): view.per,
        ("page", "value"): min(view.page, n_pages),
        ("page-count", "children"): f"of {n_pages}",
        ("alpha", "value"): view.alpha,
        ("follow", "value"): ["on"] if view.follow else [],
        ("cmap", "value"): view.cmap,
        ("sign", "value"): view.sign,
        ("norm", "value"): view.norm,
        ("clip", "value"): view.clip,
        ("tile", "value"): view.tile,
        ("mask", "value"): view.mask,
    }
    table = catalog.tables.get(view.target)
    for name in FIELDS:
        lo, hi = table.bounds[name] if table is not None else (0.0, 1.0)
        a, b = view.range(name)
        out[(f"range-{name}", "min")] = lo
        out[(f"range-{name}", "max")] = hi
        out[(f"range-{name}", "step")] = nice_step(lo, hi)
        out[(f"range-{name}", "value")] = [lo if a is None else max(a, lo), hi if b is None else min(b, hi)]
        out[(f"range-text-{name}", "children")] = _range_text(
            a,
            b,
            1 if name == "rel_delta" else (table.decimals + (name == "delta") if table is not None else 3),
        )
    return out


def _range_text(lo: float | None, hi: float | None, decimals: int) -> str:
    if lo is None and hi is None:
        return "all"
    if hi is None:
        return f"≥ {fmt(lo, decimals)}"
    if lo is None:
        return f"≤ {fmt(hi, decimals)}"
    return f"{fmt(lo, decimals)} to {fmt(hi, decimals)}"


def render(
    catalog: Catalog, pathname: str, search: str, default_per: int = 48, hash: str = ""
) -> tuple[list, str, str]:
    """(page content, status line, pager class) of a URL."""
    page = PAGES.get(pathname)
    if page is None:
        return [message("Page not found", f"{pathname} is not a page of this dashboard.")], "", "pager hidden"
    if page.build is None:
        return main_page(catalog, search), "", "pager hidden"
    view = parse_view(search, catalog, default_per, hash)
    children, status, n_pages = grid_page(catalog, view, pathname, page.build)
    return children, status, "pager" if n_pages else "pager hidden"


def histograms(catalog: Catalog, search: str, default_per: int = 48) -> list[list]:
    """Histogram bars of each range filter, under the view's other filters."""
    view = parse_view(search, catalog, default_per)
    return [histogram(catalog, view, name) for name in FIELDS]


def update(
    catalog: Catalog,
    trigger: str | None,
    value: Any,
    search: str,
    hash: str,
    pathname: str,
    default_per: int = 48,
) -> dict[tuple[str, str], Any]:
    """Everything that changes after ``trigger`` (a control id, ``url`` or None at load).

    Returns ``{(component id, property): value}`` for the properties to set; the others
    stay as they are: after a control change only the control values that changed, the
    histograms only when the filters changed, the page content unless on the Main page.
    """
    pathname = pathname or "/"
    new_search, view, n_pages = sync(catalog, trigger, value, search, pathname, default_per, hash)
    search_now = new_search if new_search is not None else search
    out: dict[tuple[str, str], Any] = {}
    props = control_props(catalog, view, n_pages)
    from_control = trigger not in (None, "url")
    if from_control:
        _, old, old_pages = sync(catalog, None, None, search, pathname, default_per, hash)
        before = control_props(catalog, old, old_pages)
        props = {k: v for k, v in props.items() if before.get(k) != v or k[0] == trigger}
        if new_search != (search or "?"):
            out[("url", "search")] = new_search
    out.update(props)
    if from_control and pathname == "/":
        return out
    content, status, pager = render(catalog, pathname, search_now, default_per, hash)
    if view.page > n_pages and status and "does not exist" not in status:
        status += f" · page {view.page} does not exist: showing page {n_pages} of {n_pages}"
    # Grids go as one HTML string; the Main page and messages as Dash components.
    grid = is_elements(content)
    out[("page-dash", "children")] = [] if grid else content
    out[("grid-html", "data")] = to_html(content) if grid else ""
    out[("status", "children")] = status
    out[("pager", "className")] = pager
    if not from_control or old.mask_key() != view.mask_key():  # not the order
        bars = histograms(catalog, search_now, default_per)
        out[("hist-html", "data")] = {name: to_html(b) for name, b in zip(FIELDS, bars)}
    return out


def open_viewer(
    catalog: Catalog, key: str | None, search: str, default_per: int = 48, hash: str = ""
) -> list:
    """Body of the viewer for tile ``key`` (empty: closed or unknown key)."""
    body = viewer_body(catalog, parse_view(search, catalog, default_per, hash), key) if key else None
    return body or []


def coming_pages(catalog: Catalog, view: View, pathname: str) -> tuple[str, str, str, list[list[int]]] | None:
    """(source, target, variant, [patch ids of the view's page, of the next page if any]) on
    the single-target grid pages: the sheets worth rendering before the browser asks."""
    table = catalog.tables.get(view.target)
    if table is None or pathname not in ("/single", "/linked"):
        return None
    rows = select(catalog, view)
    per = rows_per_page(catalog, view, pathname)
    page, n_pages, _ = page_of(len(rows), view, per)
    if not n_pages:
        return None
    pages = [rows[(p - 1) * per : p * per] for p in range(page, min(page + 1, n_pages) + 1)]
    return table.source, table.target, view.variant, [table.patch_id[r].tolist() for r in pages]


def register(app: Dash, catalog: Catalog, default_per: int, renderer=None) -> None:
    """Wire the callbacks of ``app`` to ``catalog`` (``renderer``: warms the page's and the
    next page's image sheets)."""
    sample = control_props(catalog, parse_view("", catalog, default_per), 1)
    outputs = [*PAGE_OUTPUTS, *sample]

    @app.callback(
        *[Output(cid, prop) for cid, prop in outputs],
        Input("url", "pathname"),
        Input("url", "search"),
        *[Input(cid, prop) for cid, prop in CONTROLS.items()],
        Input({"type": "brush", "plot": ALL}, "selectedData"),
        State("url", "hash"),
    )
    def _update(pathname, search, *args):
        values, hash = dict(zip(CONTROLS, args[:-2])), args[-1]
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and trigger.get("type") == "brush":
            trigger, values = (
                f"brush-{trigger.get('plot')}",
                {f"brush-{trigger.get('plot')}": ctx.triggered[0]["value"]},
            )
        elif trigger not in CONTROLS:
            trigger = None if trigger is None else "url"
        value = values.get(trigger) if trigger else None
        if trigger == "desc":
            value = bool(value)
        if trigger == "page" and value is None:
            return [no_update] * len(outputs)  # box emptied while typing
        out = update(catalog, trigger, value, search or "", hash or "", pathname or "/", default_per)
        if renderer is not None and ("grid-html", "data") in out:
            view = parse_view(out.get(("url", "search"), search), catalog, default_per, hash or "")
            upcoming = coming_pages(catalog, view, pathname or "/")
            if upcoming:
                renderer.warm(*upcoming, (view.cmap, view.norm, view.sign, view.clip, view.follow))
        return [out.get(k, no_update) for k in outputs]

    @app.callback(
        Output("viewer-body", "children"),
        Input("open-key", "data"),
        State("url", "search"),
        State("url", "hash"),
        prevent_initial_call=True,
    )
    def _viewer(key, search, hash):
        return open_viewer(catalog, key, search or "", default_per, hash or "")

    fn = "histoxai"
    app.clientside_callback(
        ClientsideFunction(fn, "grid"),
        Output("page-grid", "className"),
        Input("grid-html", "data"),
    )
    app.clientside_callback(
        ClientsideFunction(fn, "hists"),
        Output("hist-y", "className"),
        Input("hist-html", "data"),
    )
    app.clientside_callback(
        ClientsideFunction(fn, "display"),
        Output("content", "style"),
        *[Input(cid, prop) for cid, prop in DISPLAY_CONTROLS.items()],
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction(fn, "openKey"),
        Output("open-key", "data"),
        Output("viewer", "className"),
        Input("url", "hash"),
        State("open-key", "data"),
    )
    paths = json.dumps(list(PAGES))
    app.clientside_callback(
        f"function(p, s, h) {{ return window.dash_clientside.histoxai.nav({paths}, p, s, h); }}",
        *[Output(p.nav_id, "href") for p in PAGES.values()],
        *[Output(p.nav_id, "className") for p in PAGES.values()],
        Output("export-csv", "href"),
        Output("export-png", "href"),
        Output("export-pdf", "href"),
        Output("exports", "className"),
        Output("sidebar", "className"),
        Input("url", "pathname"),
        Input("url", "search"),
        Input("url", "hash"),
    )
    app.clientside_callback(
        ClientsideFunction(fn, "voxelClick"),
        Output("voxel-click", "data"),
        Input({"type": "voxel", "field": ALL}, "clickData"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        "function(n) { return n % 2 ? 'shell collapsed' : 'shell'; }",
        Output("shell", "className"),
        Input("sidebar-toggle", "n_clicks"),
        prevent_initial_call=True,
    )
