"""The app shell: header with page links (and the user with a logout link when logged
in), collapsible sidebar of controls, pager, page content and the tile viewer. Control
values are filled in from the URL by the callbacks.
"""

from __future__ import annotations

from dash import dcc, html

from dashboard.catalog import FIELDS
from dashboard.filters import FIELD_LABELS
from dashboard.sitemap import PAGES
from dashboard.state import CLIPS, CMAPS, NORMS, SIGNS, SORTS, TILE_SIZES, View, per_page_choices

DISPLAY_CONTROLS: dict[str, str] = {
    "alpha": "value",
    "follow": "value",
    "cmap": "value",
    "sign": "value",
    "norm": "value",
    "clip": "value",
    "tile": "value",
}
"""Controls handled in the browser alone (they only change image URLs and CSS)."""


def content_style(view: View) -> dict:
    """CSS variables of the content area: tile size and overlay opacity."""
    return {"--tile": f"{view.tile}px", "--alpha": f"{view.alpha:g}"}


def shell(default_per: int, user: str | None = None) -> html.Div:
    """The whole page; ``page-dash`` (Main page, messages) or ``page-grid`` is filled per URL."""
    return html.Div(
        id="shell",
        className="shell",
        children=[
            dcc.Location(id="url", refresh="callback-nav"),
            dcc.Store(id="open-key", data=""),
            dcc.Store(id="voxel-click", data=None),
            _header(user),
            html.Div(
                className="body",
                children=[
                    _sidebar(default_per),
                    html.Main(
                        id="content",
                        className="content",
                        style=content_style(View()),
                        children=[
                            html.Div(
                                className="toolbar",
                                children=[html.Div(id="status", className="status"), _exports(), _pager()],
                            ),
                            html.Div(
                                id="page-content",
                                children=[
                                    dcc.Loading(
                                        html.Div(id="page-dash"),
                                        type="dot",
                                        color="#3f6fb5",
                                        delay_show=400,
                                        overlay_style={"visibility": "visible", "opacity": 0.6},
                                    ),
                                    # grid pages arrive as HTML text (grid-html) put in place by the browser
                                    html.Div(id="page-grid"),
                                    dcc.Store(id="grid-html", data=""),
                                    dcc.Store(id="hist-html", data={}),
                                ],
                            ),
                        ],
                    ),
                ],
            ),
            _viewer(),
        ],
    )


def _header(user: str | None) -> html.Header:
    links = [dcc.Link(p.name, id=p.nav_id, href=p.path, className="nav-link") for p in PAGES.values()]
    account = (
        [
            html.Span(user, id="user-name", className="user", title="logged in as"),
            html.A("log out", href="/logout", id="logout", className="nav-link"),
        ]
        if user
        else []
    )
    return html.Header(
        className="header",
        children=[
            html.Button("☰", id="sidebar-toggle", className="icon-button", title="show / hide the controls"),
            html.Span("histoxai", className="brand"),
            html.Nav(links, className="nav"),
            html.Div(account, className="account"),
        ],
    )


def _field(label: str, control, hint: str = "") -> html.Div:
    return html.Div(
        className="field",
        children=[html.Label(label, className="field-label", title=hint or None), control],
    )


def _section(title: str, children: list) -> html.Details:
    return html.Details(open=True, className="section", children=[html.Summary(title), *children])


def _range_filter(name: str) -> html.Div:
    return html.Div(
        className="field range-filter",
        children=[
            html.Label(
                [FIELD_LABELS[name], html.Span(id=f"range-text-{name}", className="range-text")],
                className="field-label",
            ),
            html.Div(id=f"hist-{name}", className="hist"),
            dcc.RangeSlider(
                id=f"range-{name}",
                min=0,
                max=1,
                value=[0, 1],
                marks=None,
                allowCross=False,
                updatemode="mouseup",
                tooltip={"placement": "bottom", "always_visible": False},
            ),
        ],
    )


def _sidebar(default_per: int) -> html.Aside:
    radio = dict(inline=True, className="radio", inputClassName="radio-input", labelClassName="radio-label")
    return html.Aside(
        id="sidebar",
        className="sidebar",
        children=[
            _section(
                "Explanation",
                [
                    _field("Target", dcc.Dropdown(id="target", clearable=False, searchable=False)),
                    _field("Method", dcc.Dropdown(id="method", clearable=False, searchable=False)),
                    _field("Variant", dcc.Dropdown(id="variant", clearable=False, searchable=False)),
                ],
            ),
            _section(
                "Patches",
                [
                    _field("Samples", dcc.Dropdown(id="samples", multi=True, placeholder="all samples")),
                    _field("Split", dcc.RadioItems(id="split", options=["all"], value="all", **radio)),
                    *[_range_filter(name) for name in FIELDS],
                    html.Div(
                        className="field sort-row",
                        children=[
                            html.Label("Sort by", className="field-label"),
                            dcc.Dropdown(
                                id="sort",
                                options=[{"label": v, "value": k} for k, v in SORTS.items()],
                                value="id",
                                clearable=False,
                                searchable=False,
                                className="sort-dropdown",
                            ),
                            dcc.Checklist(
                                id="desc",
                                options=[{"label": "descending", "value": "desc"}],
                                value=[],
                                className="radio",
                                inputClassName="radio-input",
                                labelClassName="radio-label",
                            ),
                        ],
                    ),
                    _field(
                        "Tiles per page",
                        dcc.RadioItems(
                            id="per", options=list(per_page_choices(default_per)), value=default_per, **radio
                        ),
                    ),
                    html.Button("Reset filters", id="reset", className="button secondary"),
                ],
            ),
            _section(
                "Display",
                [
                    _field(
                        "Overlay opacity",
                        dcc.Slider(
                            id="alpha",
                            min=0,
                            max=1,
                            step=0.05,
                            value=View().alpha,
                            marks=None,
                            tooltip={"placement": "bottom"},
                        ),
                    ),
                    dcc.Checklist(
                        id="follow",
                        options=[{"label": "opacity follows saliency", "value": "on"}],
                        value=["on"],
                        **radio,
                    ),
                    _field(
                        "Colour map",
                        dcc.Dropdown(
                            id="cmap",
                            options=list(CMAPS),
                            value=View().cmap,
                            clearable=False,
                            searchable=False,
                        ),
                    ),
                    _field(
                        "Show",
                        dcc.RadioItems(
                            id="sign",
                            options=[{"label": v, "value": k} for k, v in SIGNS.items()],
                            value=View().sign,
                            **radio,
                        ),
                        "which values: magnitude, positive or negative part, or signed on a diverging scale",
                    ),
                    _field(
                        "Scale",
                        dcc.RadioItems(
                            id="norm",
                            options=[{"label": v, "value": k} for k, v in NORMS.items()],
                            value=View().norm,
                            **radio,
                        ),
                    ),
                    _field(
                        "Top colour at percentile",
                        dcc.RadioItems(
                            id="clip",
                            options=[{"label": "max" if c >= 100 else f"p{c:g}", "value": c} for c in CLIPS],
                            value=View().clip,
                            **radio,
                        ),
                        "values above this percentile of the map (or of the variant) take the top colour",
                    ),
                    _field(
                        "Tile size (px)",
                        dcc.RadioItems(id="tile", options=list(TILE_SIZES), value=View().tile, **radio),
                    ),
                ],
            ),
        ],
    )


def _exports() -> html.Div:
    """Download links; their addresses follow the URL (``assets/dashboard.js``)."""
    links = [
        html.A(
            "CSV", id="export-csv", href="/export/table.csv", className="button", title="the filtered table"
        ),
        html.A(
            "PNG",
            id="export-png",
            href="/export/single.png",
            className="button",
            title="this page as a figure",
        ),
        html.A(
            "PDF",
            id="export-pdf",
            href="/export/single.pdf",
            className="button",
            title="this page as a figure",
        ),
    ]
    return html.Div(links, id="exports", className="exports")


def _pager() -> html.Div:
    return html.Div(
        id="pager",
        className="pager hidden",
        children=[
            html.Button("‹ prev", id="prev", className="button"),
            html.Span("page", className="pager-label"),
            dcc.Input(
                id="page", type="number", min=1, step=1, value=1, debounce=True, className="page-input"
            ),
            html.Span(id="page-count", className="pager-label"),
            html.Button("next ›", id="next", className="button"),
        ],
    )


def _viewer() -> html.Div:
    return html.Div(
        id="viewer",
        className="viewer hidden",
        children=[
            html.Div(
                className="viewer-box",
                children=[
                    html.Button(
                        "×", id="viewer-close", className="icon-button viewer-close", title="close (Esc)"
                    ),
                    dcc.Loading(html.Div(id="viewer-body"), type="dot", delay_show=400),
                ],
            )
        ],
    )
