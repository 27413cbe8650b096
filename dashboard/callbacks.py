"""Callbacks. The URL query string is the single source of truth:

- :func:`sync` turns a control change into a new URL, or a URL (page load, back
  button, shared link) into control values (one callback, so the circle is allowed);
- :func:`render` draws the page content of a URL, :func:`histograms` its histograms,
  :func:`open_viewer` the enlarged tile.

Each is a plain function of the catalog and the inputs, so tests and the benchmark call
them directly; :func:`register` wires them into a Dash app.
"""

from __future__ import annotations

import json
import math
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, no_update

from dashboard.catalog import FIELDS, Catalog, nice_step
from dashboard.filters import histogram, page_of, rows_per_page, select
from dashboard.layout import NAV_IDS
from dashboard.main_page import main_page
from dashboard.pages import bar_labels, el, fmt, grid_page, message, viewer_body
from dashboard.routes import colour_bar_src
from dashboard.state import (
    CMAPS,
    NORMS,
    PAGES,
    SORTS,
    SPLIT_CHOICES,
    TILE_SIZES,
    View,
    parse_view,
    view_query,
)

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
    "alpha": "value",
    "cmap": "value",
    "norm": "value",
    "tile": "value",
    "per": "value",
    "page": "value",
    "prev": "n_clicks",
    "next": "n_clicks",
    "reset": "n_clicks",
}
"""Inputs of :func:`sync`: component id -> property."""


def apply_control(catalog: Catalog, view: View, trigger: str, value: Any) -> View:
    """The view after control ``trigger`` took ``value`` (invalid values change nothing)."""
    if trigger == "target" and value in catalog.tables:
        variants = catalog.variants(value)
        variant = view.variant if view.variant in variants else (variants[0] if variants else "")
        return view.replace(target=value, variant=variant, y=OPEN, delta=OPEN, rel_delta=OPEN, page=1)
    if trigger == "method":
        variants = catalog.methods(view.target).get(value, [])
        return view.replace(variant=variants[0]) if variants and view.variant not in variants else view
    if trigger == "variant" and value in catalog.variants(view.target):
        return view.replace(variant=value)
    if trigger == "samples":
        return view.replace(samples=tuple(s for s in (value or ()) if s in catalog.samples), page=1)
    if trigger == "split" and value in SPLIT_CHOICES:
        return view.replace(split=value, page=1)
    if trigger.startswith("range-") and trigger[6:] in FIELDS and view.target in catalog.tables:
        name = trigger[6:]
        lo, hi = catalog.tables[view.target].bounds[name]
        half = nice_step(lo, hi) / 2
        a, b = (float(v) for v in value) if value and len(value) == 2 else (lo, hi)
        return view.replace(**{name: (None if a <= lo + half else a, None if b >= hi - half else b)}, page=1)
    if trigger == "sort":
        return view.replace(sort=value, page=1) if value in SORTS else view
    if trigger == "desc":
        return view.replace(desc=bool(value), page=1)
    if trigger == "alpha" and isinstance(value, (int, float)) and math.isfinite(value):
        return view.replace(alpha=round(min(max(float(value), 0.0), 1.0), 2))
    if trigger == "cmap" and value in CMAPS:
        return view.replace(cmap=value)
    if trigger == "norm" and value in NORMS:
        return view.replace(norm=value)
    if trigger == "tile" and value in TILE_SIZES:
        return view.replace(tile=value)
    if trigger == "per" and isinstance(value, int) and value > 0:
        return view.replace(per=value, page=1)
    if trigger == "page" and isinstance(value, (int, float)) and math.isfinite(value):
        return view.replace(page=max(1, int(value)))
    if trigger in ("prev", "next"):
        return view.replace(page=max(1, view.page + (1 if trigger == "next" else -1)))
    if trigger == "reset":
        return view.replace(samples=(), split="all", y=OPEN, delta=OPEN, rel_delta=OPEN, page=1)
    return view


def sync(
    catalog: Catalog, trigger: str | None, value: Any, search: str, pathname: str, default_per: int = 48
) -> tuple[str | None, View, int]:
    """(new query string or None to keep the URL, the view, number of pages).

    ``trigger`` is the id of the control that changed (``None`` or ``url``: the URL
    changed and the controls follow it).
    """
    view = parse_view(search, catalog, default_per)
    if trigger not in (None, "url"):
        view = apply_control(catalog, view, trigger, value)
    n = len(select(catalog, view)) if view.target else 0
    page, n_pages, _ = page_of(n, view, rows_per_page(view, pathname))
    view = view.replace(page=page)
    new_search = None if trigger in (None, "url") else view_query(view, default_per)
    return new_search, view, n_pages


def control_props(catalog: Catalog, view: View, n_pages: int, search: str) -> dict[tuple[str, str], Any]:
    """Every control property of :func:`sync`'s outputs, for ``view``."""
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
        ("split", "value"): view.split,
        ("sort", "value"): view.sort,
        ("desc", "value"): ["desc"] if view.desc else [],
        ("alpha", "value"): view.alpha,
        ("cmap", "value"): view.cmap,
        ("norm", "value"): view.norm,
        ("tile", "value"): view.tile,
        ("per", "value"): view.per,
        ("page", "value"): view.page,
        ("page", "max"): n_pages,
        ("page-count", "children"): f"of {n_pages}",
        ("colour-bar", "src"): colour_bar_src(view.cmap),
        ("colour-bar-labels", "children"): [el("Span", t) for t in bar_labels(view)],
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
            a, b, 1 if name == "rel_delta" else (table.decimals if table is not None else 3)
        )
    for path, nav_id in NAV_IDS.items():
        out[(nav_id, "href")] = path + (search or "")
    return out


def _range_text(lo: float | None, hi: float | None, decimals: int) -> str:
    if lo is None and hi is None:
        return "all"
    if hi is None:
        return f"≥ {fmt(lo, decimals)}"
    if lo is None:
        return f"≤ {fmt(hi, decimals)}"
    return f"{fmt(lo, decimals)} to {fmt(hi, decimals)}"


def render(catalog: Catalog, pathname: str, search: str, default_per: int = 48) -> tuple[list, str, str]:
    """(page content, status line, pager class) of a URL."""
    if pathname not in PAGES:
        return [message("Page not found", f"{pathname} is not a page of this dashboard.")], "", "pager hidden"
    view = parse_view(search, catalog, default_per)
    if pathname == "/":
        return main_page(catalog, search), "", "pager hidden"
    children, status, n_pages = grid_page(catalog, view, pathname)
    return children, status, "pager" if n_pages else "pager hidden"


def histograms(catalog: Catalog, search: str, default_per: int = 48) -> list[dict]:
    """One figure per range filter, under the view's other filters."""
    view = parse_view(search, catalog, default_per)
    return [histogram(catalog, view, name) for name in FIELDS]


def open_viewer(catalog: Catalog, key: str | None, search: str, default_per: int = 48) -> tuple[str, list]:
    """(viewer class, body) after a tile with ``key`` was clicked (None: close)."""
    body = viewer_body(catalog, parse_view(search, catalog, default_per), key) if key else None
    return ("viewer", body) if body else ("viewer hidden", [])


def register(app: Dash, catalog: Catalog, default_per: int) -> None:
    """Wire the callbacks of ``app`` to ``catalog``."""
    sample = control_props(catalog, parse_view("", catalog, default_per), 1, "")
    outputs = list(sample)

    @app.callback(
        Output("url", "search"),
        *[Output(cid, prop) for cid, prop in outputs],
        Input("url", "search"),
        *[Input(cid, prop) for cid, prop in CONTROLS.items()],
        State("url", "pathname"),
    )
    def _sync(search, *args):
        values, pathname = dict(zip(CONTROLS, args[:-1])), args[-1]
        trigger = ctx.triggered_id
        if trigger not in (None, "url") and trigger not in CONTROLS:
            trigger = None
        value = values.get(trigger) if trigger else None
        if trigger == "desc":
            value = bool(value)
        new_search, view, n_pages = sync(catalog, trigger, value, search, pathname or "/", default_per)
        props = control_props(catalog, view, n_pages, new_search if new_search is not None else search)
        return [no_update if new_search is None else new_search, *[props[k] for k in outputs]]

    @app.callback(
        Output("page-content", "children"),
        Output("status", "children"),
        Output("pager", "className"),
        Input("url", "pathname"),
        Input("url", "search"),
    )
    def _render(pathname, search):
        return render(catalog, pathname or "/", search, default_per)

    @app.callback(
        *[Output(f"hist-{name}", "figure") for name in FIELDS],
        Input("url", "search"),
    )
    def _histograms(search):
        return histograms(catalog, search, default_per)

    @app.callback(
        Output("viewer", "className"),
        Output("viewer-body", "children"),
        Input({"type": "tile", "key": ALL}, "n_clicks"),
        Input("viewer-close", "n_clicks"),
        State("url", "search"),
        prevent_initial_call=True,
    )
    def _viewer(_clicks, _close, search):
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and ctx.triggered and ctx.triggered[0]["value"]:
            return open_viewer(catalog, trigger.get("key"), search, default_per)
        if trigger == "viewer-close":
            return open_viewer(catalog, None, search, default_per)
        return no_update, no_update

    paths = json.dumps(list(NAV_IDS))
    app.clientside_callback(
        "function(p) { return " + paths + ".map(q => q === p ? 'nav-link active' : 'nav-link'); }",
        *[Output(nav_id, "className") for nav_id in NAV_IDS.values()],
        Input("url", "pathname"),
    )
    app.clientside_callback(
        "function(n) { return n % 2 ? 'shell collapsed' : 'shell'; }",
        Output("shell", "className"),
        Input("sidebar-toggle", "n_clicks"),
        prevent_initial_call=True,
    )
