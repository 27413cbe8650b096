"""Page contents: the patch grids (single target, multiple targets, multiple methods),
the tile viewer and the messages for empty results and unloadable stores.
The Main page is in :mod:`histoxai.dashboard.main_page`.

A tile is a handful of elements: ``div.tile[data-key]`` holding the raw patch with the
overlay stacked on it (``img.ov[data-base]``: the browser appends the display query) and
one text line per row of its title (cut with an ellipsis; the whole title is the tooltip).
Its images are rows of the page's image sheets (:mod:`histoxai.dashboard.routes`): each
``img`` is the whole sheet, scaled so one row fills the tile and shifted to row ``--i``.
One click listener on the document opens tiles (``assets/dashboard.js``).
"""

from __future__ import annotations

import math
from html import escape

import numpy as np
from dash import html

from histoxai.dashboard.catalog import Catalog, TargetTable
from histoxai.dashboard.filters import page_of, rows_per_page, select
from histoxai.dashboard.routes import legend_base, mask_base, overlay_base, patch_src, with_query
from histoxai.dashboard.state import SORTS, View, display_query


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


_VOID = {"img", "br", "hr", "input"}


def _css(style: dict) -> str:
    return ";".join(
        f"{k if k.startswith('--') else ''.join('-' + c.lower() if c.isupper() else c for c in k)}:{v}"
        for k, v in style.items()
    )


def to_html(node) -> str:
    """HTML text of elements built by :func:`el` (strings escaped, ``className`` as ``class``,
    ``style`` as CSS). A page of tiles goes to the browser as one string put in place at
    once: far less work for the browser than one React component per element."""
    if node is None:
        return ""
    if isinstance(node, (list, tuple)):
        return "".join(to_html(n) for n in node)
    if not isinstance(node, dict):
        return escape(str(node), quote=False)
    tag = node["type"].lower()
    props = node["props"]
    attrs = []
    for k, v in props.items():
        if k == "children" or v is None or v is False:
            continue
        name = {"className": "class"}.get(k, k)
        text = _css(v) if k == "style" else ("" if v is True else str(v))
        attrs.append(f' {name}="{escape(text)}"' if v is not True else f" {name}")
    head = f"<{tag}{''.join(attrs)}>"
    return head if tag in _VOID else f"{head}{to_html(props.get('children'))}</{tag}>"


def is_elements(children) -> bool:
    """True when ``children`` are all :func:`el` elements (they can go as HTML text)."""
    return all(isinstance(c, dict) and c.get("namespace") == "dash_html_components" for c in children)


def numbers(table: TargetTable, row: int) -> dict[str, str]:
    """y, ŷ, Δ, rΔ of a row as text (counts as integers, ŷ and Δ one decimal more)."""
    v = {k: float(a[row]) for k, a in table.values.items()}
    d = table.decimals
    return {
        "y": fmt(v["y"], d),
        "ŷ": fmt(v["y_hat"], d + 1 if d == 0 else d),
        "Δ": fmt(v["delta"], d + 1, signed=True),
        "rΔ": fmt_pct(v["rel_delta"]),
    }


def title_lines(table: TargetTable, row: int) -> list[str]:
    pid = int(table.patch_id[row])
    n = numbers(table, row)
    return [
        f"#{pid} · {table.sample_names[table.sample[row]]}",
        f"y {n['y']} · ŷ {n['ŷ']}",
        f"Δ {n['Δ']} · rΔ {n['rΔ']}",
    ]


def metric_line(table: TargetTable, view: View, row: int) -> list[str]:
    """The sorted-by per-patch metric of the row (none unless sorting by one)."""
    if not view.sort.startswith("m:"):
        return []
    values = table.metrics.get(view.variant, {}).get(view.sort[2:])
    return [] if values is None else [f"{view.sort[2:]} {fmt(float(values[row]))}"]


def sheet_img(src: str | None, i: int, n: int, className: str, **props) -> dict:
    """Row ``i`` of the ``n``-row image sheet ``src``, cropped by the tile (CSS ``--i``/``--n``)."""
    return el(
        "Img", src=src, className=className, alt=props.pop("alt", ""), style={"--i": i, "--n": n}, **props
    )


def tile(
    key: str,
    ids: tuple[int, ...],
    i: int,
    lines: list[str],
    overlay: tuple[str, int, int] | None,
    view: View,
    caption: str = "",
) -> dict:
    """One tile: patch ``ids[i]`` (row ``i`` of the page's patch sheet of ``ids``), the overlay
    on it (``overlay``: base URL of its sheet, row, rows; None: raw only), title lines."""
    layers = [sheet_img(patch_src(ids), i, len(ids), "raw", alt=f"patch {ids[i]}")]
    if overlay is not None:
        base, row, rows = overlay
        layers.append(
            sheet_img(with_query(base, display_query(view)), row, rows, "ov", **{"data-base": base})
        )
    layers.append(mask_layer(ids, i, view))
    children = [el("Div", layers, className="stack")]
    children += [el("Div", line, className="l") for line in lines]
    tip = "\n".join(([caption] if caption else []) + lines + ["click to enlarge"])
    return el("Div", children, className="tile", title=tip, **{"data-key": key})


def mask_layer(ids: tuple[int, ...], i: int, view: View) -> dict:
    """Ground-truth outline on top of the tile (src only when a class is chosen)."""
    base = mask_base(ids)
    src = with_query(base, f"cls={view.mask}") if view.mask else None
    return sheet_img(src, i, len(ids), "mk", **{"data-mask": base})


def placeholder(text: str) -> dict:
    return el("Div", el("Div", text, className="placeholder"), className="tile")


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


def legend(table: TargetTable, variant: str, view: View, pid: int | None = None) -> dict:
    """Colour bar with real-scale ticks (an image the browser re-requests on display changes)."""
    base = legend_base(table.source, table.target, variant, pid)
    return el(
        "Img",
        src=with_query(base, display_query(view)),
        className="legend",
        alt="colour scale",
        **{"data-base": base},
    )


def heading(text: str, sub: str, extra: dict | None = None) -> dict:
    return el(
        "Div",
        [el("H2", text), el("Span", sub, className="sub"), extra or el("Span")],
        className="page-heading",
    )


def _order_text(view: View) -> str:
    name = SORTS.get(view.sort, view.sort.removeprefix("m:"))
    return f"sorted by {name}{' descending' if view.desc else ''}"


def grid_page(catalog: Catalog, view: View, pathname: str, build) -> tuple[list, str, int]:
    """(children, status text, number of pages; 0 when nothing is shown) of a grid page.

    A page number beyond the last is clamped and the status says so.
    """
    if not catalog.ok:
        return [no_data(catalog)], "", 0
    table = catalog.tables[view.target]
    rows = select(catalog, view)
    per = rows_per_page(catalog, view, pathname)
    page, n_pages, part = page_of(len(rows), view, per)
    shown = rows[part]
    if not len(rows):
        return (
            [
                message(
                    "No patch matches the filters",
                    "Widen a range, choose other samples or another split, or press “Reset filters”.",
                )
            ],
            f"0 of {len(table):,} patches match",
            0,
        )
    status = f"{len(rows):,} of {len(table):,} patches match · {_order_text(view)}"
    if page != view.page:
        status += f" · page {view.page} does not exist: showing page {page} of {n_pages}"
    return build(catalog, view, table, shown), status, n_pages


def single_page(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    label = catalog.variant_label(view.target, view.variant)
    ids = tuple(table.patch_id[shown].tolist())
    base = overlay_base(table.source, table.target, view.variant, ids)
    tiles = [
        tile(
            tile_key(pid, view.target, view.variant),
            ids,
            i,
            title_lines(table, r) + metric_line(table, view, r),
            (base, i, len(ids)),
            view,
        )
        for i, (r, pid) in enumerate(zip(shown.tolist(), ids))
    ]
    return [
        heading(
            f"{catalog.target_label(view.target)} · {label}",
            "Single target",
            legend(table, view.variant, view),
        ),
        el("Div", tiles, className="grid"),
    ]


def _group(cells: list, n: int) -> dict:
    # Groups share a row when they fit and stretch to fill it (tiles grow with them).
    return el(
        "Div",
        cells,
        className="group",
        style={
            "gridTemplateColumns": f"repeat({n}, minmax(0, 1fr))",
            "flex": f"1 1 calc({n} * (var(--tile) + 12px))",
        },
    )


def targets_page(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    keys = list(catalog.tables)
    ids = tuple(table.patch_id[shown].tolist())
    # per target: its table rows of the page's patches (-1: not explained) and the overlay
    # sheet of those it explained
    sheets = {}
    for k in keys:
        other = catalog.tables[k]
        pos = other.positions(list(ids))
        have = tuple(p for p, q in zip(ids, pos.tolist()) if q >= 0)
        computed = have and view.variant in catalog.variants(k)
        sheets[k] = (
            pos,
            have,
            overlay_base(other.source, other.target, view.variant, have) if computed else "",
        )
    groups = []
    for i, r in enumerate(shown.tolist()):
        pid = ids[i]
        cells = [
            tile(tile_key(pid, view.target, view.variant), ids, i, title_lines(table, r)[:1], None, view)
        ]
        for k in keys:
            other = catalog.tables[k]
            pos, have, base = sheets[k]
            if view.variant not in catalog.variants(k):
                cells.append(placeholder(f"{view.variant} not computed for {other.target}"))
            elif pos[i] < 0:
                cells.append(placeholder(f"patch {pid} not explained for {other.target}"))
            else:
                n = numbers(other, int(pos[i]))
                line = f"{other.target} · y {n['y']} · ŷ {n['ŷ']}"
                overlay = (base, have.index(pid), len(have))
                cells.append(tile(tile_key(pid, k, view.variant), ids, i, [line], overlay, view))
        groups.append(_group(cells, len(keys) + 1))
    return [
        heading(
            catalog.variant_label(view.target, view.variant),
            "Multiple targets",
            legend(table, view.variant, view),
        ),
        el("Div", groups, className="groups"),
    ]


def methods_page(catalog: Catalog, view: View, table: TargetTable, shown: np.ndarray) -> list:
    variants = catalog.variants(view.target)
    ids = tuple(table.patch_id[shown].tolist())
    bases = {v: overlay_base(table.source, table.target, v, ids) for v in variants}
    groups = []
    for i, r in enumerate(shown.tolist()):
        pid = ids[i]
        cells = [tile(tile_key(pid, view.target, view.variant), ids, i, title_lines(table, r), None, view)]
        for v in variants:
            label = catalog.variant_label(view.target, v, limit=None)
            overlay = (bases[v], i, len(ids))
            cells.append(tile(tile_key(pid, view.target, v), ids, i, [v], overlay, view, caption=label))
        groups.append(_group(cells, len(variants) + 1))
    return [
        heading(catalog.target_label(view.target), "Multiple methods", legend(table, view.variant, view)),
        el("Div", groups, className="groups"),
    ]


def _neighbours(catalog: Catalog, view: View, key: str, pid: int) -> tuple[int | None, int | None]:
    """Patch ids before and after ``pid`` in the view's order (the table's order for another target)."""
    table = catalog.tables[key]
    rows = select(catalog, view) if key == view.target else np.arange(len(table))
    ids = table.patch_id[rows]
    where = np.flatnonzero(ids == pid)
    if not where.size:
        return None, None
    i = int(where[0])
    return (int(ids[i - 1]) if i > 0 else None, int(ids[i + 1]) if i + 1 < len(ids) else None)


def _open_button(
    text: str, key: str | None, bid: str | None = None, current: bool = False, tip: str = ""
) -> dict:
    props = {"className": "button" + (" current" if current else ""), "title": tip or None}
    if bid:
        props["id"] = bid
    if key is None:
        props["disabled"] = True
    else:
        props["data-open"] = key
    return el("Button", text, **{k: v for k, v in props.items() if v is not None})


def viewer_body(catalog: Catalog, view: View, key: str) -> list | None:
    """Large raw patch and overlay with the patch's numbers for every target, prev/next in
    the grid's order (arrow keys) and a switch to every method variant of the target."""
    parsed = parse_tile_key(key)
    if parsed is None or parsed[1] not in catalog.tables:
        return None
    pid, tkey, variant = parsed
    table = catalog.tables[tkey]
    r = int(table.positions([pid])[0])
    if r < 0 or variant not in catalog.variants(tkey):
        return None
    where = table.grid.iloc[r]
    head = [html.Th(h) for h in ("target", "y", "ŷ", "Δ", "rΔ")]
    rows = [html.Tr(head)]
    for k, t in catalog.tables.items():
        p = int(t.positions([pid])[0])
        if p >= 0:
            n = numbers(t, p)
            cells = [html.Td(catalog.target_label(k)), *[html.Td(n[c]) for c in ("y", "ŷ", "Δ", "rΔ")]]
            rows.append(html.Tr(cells, className="current" if k == tkey else None))
    prev, nxt = _neighbours(catalog, view, tkey, pid)
    switch = [
        _open_button(
            v, tile_key(pid, tkey, v), current=v == variant, tip=catalog.variant_label(tkey, v, limit=None)
        )
        for v in catalog.variants(tkey)
    ]
    base = overlay_base(table.source, table.target, variant, (pid,))
    overlay = html.Img(
        src=with_query(base, display_query(view)), className="ov", alt="", **{"data-base": base}
    )
    return [
        html.Div(
            [
                _open_button(
                    "‹ prev",
                    None if prev is None else tile_key(prev, tkey, variant),
                    "viewer-prev",
                    tip="← key",
                ),
                html.H3(f"Patch #{pid}", id="viewer-title"),
                _open_button(
                    "next ›",
                    None if nxt is None else tile_key(nxt, tkey, variant),
                    "viewer-next",
                    tip="→ key",
                ),
            ],
            className="viewer-head",
        ),
        html.Div(
            f"sample {where['sample']} · voxel row {where['row']}, col {where['col']} · split {where['split']}",
            className="sub",
        ),
        html.Div(switch, className="method-switch", id="viewer-methods"),
        html.Div(
            [
                html.Figure([html.Img(src=patch_src((pid,)), className="big"), html.Figcaption("patch")]),
                html.Figure(
                    [
                        html.Div(
                            [
                                html.Img(src=patch_src((pid,)), className="raw"),
                                overlay,
                                mask_layer((pid,), 0, view),
                            ],
                            className="stack big",
                        ),
                        html.Figcaption(
                            f"{table.target} · {catalog.variant_label(tkey, variant, limit=None)}"
                        ),
                    ]
                ),
            ],
            className="pair",
        ),
        html.Div(
            [
                html.Table(rows, className="numbers"),
                _metrics_table(table, variant, r),
                legend(table, variant, view, pid),
            ],
            className="viewer-foot",
        ),
    ]


def _metrics_table(table: TargetTable, variant: str, row: int):
    """This patch's per-patch explanation metrics for ``variant`` (xai-eval), if any."""
    metrics = table.metrics.get(variant)
    if not metrics:
        return None
    cells = [html.Tr([html.Td(m), html.Td(fmt(float(a[row])))]) for m, a in metrics.items()]
    head = html.Tr([html.Th("xai-eval"), html.Th(variant)])
    return html.Table([head, *cells], className="numbers", id="viewer-metrics")
