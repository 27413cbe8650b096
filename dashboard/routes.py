"""Flask routes serving the rendered PNGs on the Dash server.

Only patches of the loaded stores are served: ids are parsed as integers by the URL
rule, store, target, variant and display settings are looked up among the loaded names
and known choices, and nothing taken from a request is ever used as a file path.

``/img/patch/<pid>.png``
``/img/overlay/<source>/<target>/<variant>/<pid>.png?cmap=viridis&norm=image&sign=abs&clip=99&fa=1``
``/img/legend/<source>/<target>/<variant>.png?<same>[&pid=12]`` (colour bar with real-scale ticks)
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Response, abort, request

from dashboard.overlays import Renderer
from dashboard.state import CLIPS, CMAPS, NORMS, SIGNS, View, display_query

MAX_AGE_S = 600


def patch_src(pid: int) -> str:
    return f"/img/patch/{int(pid)}.png"


def _path(source: str, target: str, variant: str) -> str:
    return "/".join(quote(p, safe="") for p in (source, target, variant))


def overlay_base(source: str, target: str, variant: str, pid: int) -> str:
    """Overlay URL without its display query (the browser appends the current one)."""
    return f"/img/overlay/{_path(source, target, variant)}/{int(pid)}.png"


def overlay_src(source: str, target: str, variant: str, pid: int, view: View) -> str:
    return with_query(overlay_base(source, target, variant, pid), display_query(view))


def legend_base(source: str, target: str, variant: str, pid: int | None = None) -> str:
    """Legend URL without its display query; ``pid``: real scale of that image."""
    tail = f"?pid={int(pid)}" if pid is not None else ""
    return f"/img/legend/{_path(source, target, variant)}.png{tail}"


def with_query(base: str, query: str) -> str:
    """``base`` with ``query`` appended (``?`` or ``&``); the browser does the same."""
    return f"{base}{'&' if '?' in base else '?'}{query}"


def display_args() -> tuple[str, str, str, float, bool]:
    """(cmap, norm, sign, clip, follow) of the request; 400 for anything unknown."""
    a = request.args
    cmap, norm, sign = a.get("cmap", "viridis"), a.get("norm", "image"), a.get("sign", "abs")
    try:
        clip = float(a.get("clip", "99"))
    except ValueError:
        abort(400)
    follow = a.get("fa", "1")
    if cmap not in CMAPS or norm not in NORMS or sign not in SIGNS or clip not in CLIPS or follow not in "01":
        abort(400)
    return cmap, norm, sign, clip, follow == "1"


def register_routes(server: Flask, renderer: Renderer) -> None:
    """Add the image routes to ``server``."""

    def png(data: bytes) -> Response:
        resp = Response(data, mimetype="image/png")
        resp.headers["Cache-Control"] = f"private, max-age={MAX_AGE_S}"
        return resp

    @server.route("/img/patch/<int:pid>.png")
    def patch_image(pid: int):
        try:
            return png(renderer.patch_png(pid))
        except KeyError:
            abort(404)

    @server.route("/img/overlay/<source>/<target>/<variant>/<int:pid>.png")
    def overlay_image(source: str, target: str, variant: str, pid: int):
        args = display_args()
        try:
            return png(renderer.overlay_png(source, target, variant, pid, *args))
        except KeyError:
            abort(404)

    @server.route("/img/legend/<source>/<target>/<variant>.png")
    def legend_image(source: str, target: str, variant: str):
        cmap, norm, sign, clip, _ = display_args()
        pid = request.args.get("pid")
        if pid is not None and not pid.isdigit():
            abort(400)
        try:
            return png(
                renderer.legend_png(
                    source, target, variant, None if pid is None else int(pid), cmap, norm, sign, clip
                )
            )
        except KeyError:
            abort(404)

    @server.route("/export/table.csv")
    def export_table():
        from dashboard.export import table_csv
        from dashboard.state import parse_view

        view = parse_view(request.query_string.decode(), renderer.catalog)
        resp = Response(table_csv(renderer.catalog, view), mimetype="text/csv")
        resp.headers["Content-Disposition"] = (
            f'attachment; filename="histoxai-{view.target}-{view.variant}.csv"'
        )
        return resp

    @server.route("/export/<page>.<fmt>")
    def export_figure(page: str, fmt: str):
        from dashboard.export import FIGURE_PAGES, grid_figure
        from dashboard.state import parse_view

        if page not in FIGURE_PAGES or fmt not in ("png", "pdf") or not renderer.catalog.ok:
            abort(404)
        view = parse_view(request.query_string.decode(), renderer.catalog)
        data = grid_figure(renderer.catalog, renderer, view, page, fmt)
        resp = Response(data, mimetype="image/png" if fmt == "png" else "application/pdf")
        name = f"histoxai-{page}-{view.target}-{view.variant}-p{view.page}.{fmt}"
        resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return resp

    @server.route("/img/<path:rest>")
    def no_image(rest: str):
        # Anything else under /img/ is 404 (not Dash's catch-all page).
        abort(404)
