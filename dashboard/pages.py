"""Page contents: the patch grids (single target, multiple targets, multiple methods),
the tile viewer and the messages for empty results and unloadable stores.
The Main page is in :mod:`dashboard.main_page`.
"""

from __future__ import annotations

import math

import numpy as np
from dash import html

from dashboard.catalog import Catalog, TargetTable
from dashboard.filters import page_of, rows_per_page, select
from dashboard.routes import colour_bar_src, overlay_src, patch_src
from dashboard.state import DIVERGING, SORTS, View


def fmt(x: float | None, decimals: int | None = None, signed: bool = False) -> str:
    """``decimals`` fixed decimals (None: 3 significant digits), '–' for NaN, a real minus sign."""
    if x is None or not math.isfinite(x):
        return "–"
    sign = "+" if signed else ""
    text = f"{x:{sign}.{decimals}f}" if decimals is not None else f"{x:{sign}.3g}"
    return text.replace("-", "−")


def fmt_pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.1f}%".replace("-", "−")


def tile_key(pid: int, key: str, variant: str) -> str:
    return f"{int(pid)}|{key}|{variant}"


def parse_tile_key(text: str) -> tuple[int, str, str] | None:
    parts = str(text).split("|")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1], parts[2]


def el(tag: str, children=None, **props) -> dict:
    """An ``html.<tag>`` element in its JSON form.

    The browser gets exactly what ``html.Div(...)`` would send; building the dict skips
    the Python component's argument validation, which dominates the cost of a page of
    tiles (about 20 ms for 48 tiles, against under 2 ms; see benchmarks/bench_dashboard.py).
    """
    if children is not None:
        props["children"] = children
    return {"type": tag, "namespace": "dash_html_components", "props": props}


def metrics_line(table: TargetTable, row: int) -> list:
    v = {k: float(a[row]) for k, a in table.values.items()}
    d = table.decimals
    return [
        el("Div", [_k("y"), fmt(v["y"], d), _k("ŷ"), fmt(v["y_hat"], d)], className="line"),
        el(
            "Div",
            [_k("Δ"), fmt(v["delta"], d + 1, signed=True), _k("rΔ"), fmt_pct(v["rel_delta"])],
            className="line",
        ),
    ]


def _k(name: str) -> dict:
    return el("Span", name, className="k")


def tile(src: str, key: str, size: int, title: list, alt: str) -> dict:
    children = [el("Img", src=src, width=size, height=size, className="tile-img", alt=alt)]
    if title:
        children.append(el("Div", title, className="tile-title"))
    return el(
        "Div",
        children,
        id={"type": "tile", "key": key},
        n_clicks=0,
        className="tile",
        title="click to enlarge",
    )


def id_line(table: TargetTable, row: int) -> dict:
    pid = int(table.patch_id[row])
    sample = table.sample_names[table.sample[row]]
    return el(
        "Div",
        [el("Span", f"#{pid}", className="pid"), el("Span", sample, className="sample")],
        className="line",
    )


def placeholder(size: int, text: str) -> dict:
    return el(
        "Div",
        el("Div", text, className="placeholder", style={"width": size, "height": size}),
        className="tile",
    )


def message(title: str, detail: str | list, kind: str = "empty") -> html.Div:
    return html.Div([html.H3(title), html.P(detail)], className=f"message {kind}")


def problems_panel(catalog: Catalog) -> html.Div | None:
    if not catalog.problems:
        return None
    items = [
        html.Li([html.Code(p.path), html.Div(p.message, className="problem-text")]) for p in catalog.problems
    ]
    return html.Div(
        [html.H3("Some stores could not be loaded"), html.Ul(items)],
        className="message error",
        id="problems",
    )


def no_data(catalog: Catalog) -> html.Div:
    """Shown instead of a grid when no patches or no saliency maps are loaded."""
    what = "patch store" if catalog.patches is None else "saliency store"
    return html.Div(
        [
            problems_panel(catalog) or html.Div(),
            message(
                f"No {what} loaded",
                "Run the pipeline (`dvc repro`, or `histoxai prepare` then `histoxai explain`) or point "
                "the dashboard at existing stores with dashboard.patches_dir / dashboard.saliency_dirs.",
                kind="error",
            ),
        ]
    )


def bar_labels(view: View) -> list[str]:
    """(low end, what the colours show, high end) of the colour bar."""
    if view.cmap in DIVERGING:
        return ["−1", "signed saliency", "+1"]
    scale = {"image": "max per image", "dataset": "p99.5 of the variant", "none": "raw"}[view.norm]
    return ["0", f"|saliency| / {scale}", "1"]


def legend(view: View) -> dict:
    """Colour bar with its end labels, for the page heading and the viewer."""
    lo, what, hi = bar_labels(view)
    return el(
        "Div",
        [
            el("Span", what, className="legend-what"),
            el("Span", lo),
            el("Img", src=colour_bar_src(view.cmap), className="legend-bar", alt=f"colour map {view.cmap}"),
            el("Span", hi),
        ],
        className="legend",
    )


def _heading(text: str, sub: str, view: View) -> dict:
    return el(
        "Div", [el("H2", text), el("Span", sub, className="sub"), legend(view)], className="page-heading"
    )


def _order_text(view: View) -> str:
    return f"sorted by {SORTS[view.sort]}{' descending' if view.desc else ''}"


def grid_page(catalog: Catalog, view: View, pathname: str) -> tuple[list, str, int]:
    """(children, status text, number of pages; 0 when nothing is shown) of a grid page."""
    if not catalog.ok:
        return [no_data(catalog)], "", 0
    table = catalog.tables[view.target]
    rows = select(catalog, view)
    per = rows_per_page(view, pathname)
    page, n_pages, part = page_of(len(rows), view, per)
    shown = rows[part]
    status = (
        f"{len(rows):,} of {len(table):,} patches match · {_order_text(view)}"
        if len(rows)
        else f"0 of {len(table):,} patches match"
    )
    if not len(rows):
        return (
            [
                message(
                    "No patch matches the filters",
                    "Widen a range, choose other samples or another split, or press “Reset filters”.",
                )
            ],
            status,
            0,
        )
    build = {"/single": _single, "/targets": _targets, "/methods": _methods}[pathname]
    return build(catalog, view, table, shown), status, n_pages


def _single(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    label = catalog.variant_label(view.target, view.variant)
    tiles = [
        tile(
            overlay_src(table.source, table.target, view.variant, pid, view.cmap, view.alpha, view.norm),
            tile_key(pid, view.target, view.variant),
            view.tile,
            [id_line(table, r), *metrics_line(table, r)],
            alt=f"patch {pid}",
        )
        for r, pid in zip(shown, table.patch_id[shown].tolist())
    ]
    return [
        _heading(f"{catalog.target_label(view.target)} · {label}", "Single target", view),
        el(
            "Div", tiles, className="grid", style={"gridTemplateColumns": f"repeat(auto-fill, {view.tile}px)"}
        ),
    ]


def _columns(view: View, n: int) -> dict:
    return {"gridTemplateColumns": f"repeat({n}, {view.tile}px)"}


def _raw_tile(view: View, table: TargetTable, r: int, title: list) -> dict:
    pid = int(table.patch_id[r])
    return tile(
        patch_src(pid), tile_key(pid, view.target, view.variant), view.tile, title, alt=f"patch {pid}"
    )


def _targets(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    keys = list(catalog.tables)
    header = [el("Div", "patch", className="col-head")]
    header += [el("Div", catalog.target_label(k), className="col-head") for k in keys]
    cells: list = []
    for r in shown.tolist():
        pid = int(table.patch_id[r])
        cells.append(_raw_tile(view, table, r, [id_line(table, r)]))
        for k in keys:
            other = catalog.tables[k]
            pos = int(other.positions([pid])[0])
            if view.variant not in catalog.variants(k):
                cells.append(placeholder(view.tile, f"{view.variant} not computed for {other.target}"))
            elif pos < 0:
                cells.append(placeholder(view.tile, f"not explained for {other.target}"))
            else:
                src = overlay_src(
                    other.source, other.target, view.variant, pid, view.cmap, view.alpha, view.norm
                )
                cells.append(
                    tile(
                        src, tile_key(pid, k, view.variant), view.tile, metrics_line(other, pos), f"{k} {pid}"
                    )
                )
    return [
        _heading(f"{catalog.variant_label(view.target, view.variant)}", "Multiple targets", view),
        el("Div", header + cells, className="grid table-grid", style=_columns(view, len(keys) + 1)),
    ]


def _methods(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    variants = catalog.variants(view.target)
    header = [el("Div", "patch", className="col-head")]
    header += [
        el("Div", v, className="col-head", title=catalog.variant_label(view.target, v, limit=None))
        for v in variants
    ]
    cells: list = []
    for r in shown.tolist():
        pid = int(table.patch_id[r])
        cells.append(_raw_tile(view, table, r, [id_line(table, r), *metrics_line(table, r)]))
        for v in variants:
            src = overlay_src(table.source, table.target, v, pid, view.cmap, view.alpha, view.norm)
            cells.append(tile(src, tile_key(pid, view.target, v), view.tile, [], f"{v} {pid}"))
    return [
        _heading(catalog.target_label(view.target), "Multiple methods", view),
        el("Div", header + cells, className="grid table-grid", style=_columns(view, len(variants) + 1)),
    ]


def viewer_body(catalog: Catalog, view: View, key: str) -> list | None:
    """Large raw patch and overlay side by side with the patch's numbers for every target."""
    parsed = parse_tile_key(key)
    if parsed is None or parsed[1] not in catalog.tables:
        return None
    pid, tkey, variant = parsed
    table = catalog.tables[tkey]
    r = int(table.positions([pid])[0])
    if r < 0 or variant not in catalog.variants(tkey):
        return None
    where = table.grid.iloc[r]
    rows = [html.Tr([html.Th(h) for h in ("target", "y", "ŷ", "Δ", "rΔ")])]
    for k, t in catalog.tables.items():
        p = int(t.positions([pid])[0])
        if p >= 0:
            v = {f: float(a[p]) for f, a in t.values.items()}
            cls = "current" if k == tkey else None
            rows.append(
                html.Tr(
                    [
                        html.Td(catalog.target_label(k)),
                        html.Td(fmt(v["y"], t.decimals)),
                        html.Td(fmt(v["y_hat"], t.decimals)),
                        html.Td(fmt(v["delta"], t.decimals + 1, signed=True)),
                        html.Td(fmt_pct(v["rel_delta"])),
                    ],
                    className=cls,
                )
            )
    src = overlay_src(table.source, table.target, variant, pid, view.cmap, view.alpha, view.norm)
    return [
        html.H3(f"Patch #{pid}", id="viewer-title"),
        html.Div(
            f"sample {where['sample']} · voxel row {where['row']}, col {where['col']} · split {where['split']}",
            className="sub",
        ),
        html.Div(
            [
                html.Figure([html.Img(src=patch_src(pid), className="big"), html.Figcaption("patch")]),
                html.Figure(
                    [
                        html.Img(src=src, className="big", id="viewer-overlay"),
                        html.Figcaption(
                            f"{table.target} · {catalog.variant_label(tkey, variant, limit=None)}"
                        ),
                    ]
                ),
            ],
            className="pair",
        ),
        html.Div([html.Table(rows, className="numbers"), legend(view)], className="viewer-foot"),
    ]
