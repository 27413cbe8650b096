"""Flask routes serving the rendered images on the Dash server.

A grid page's images come as *sheets*: one image holding the tiles of a page stacked top to
bottom (row ``i`` is the ``i``-th id of ``ids``), which every tile crops with CSS. A page turn
is then two or three requests instead of two per tile; the viewer asks for sheets of one id.

Only patches of the loaded stores are served: ids are parsed as integers, store, target,
variant and display settings are looked up among the loaded names and known choices, and
nothing taken from a request is ever used as a file path.

``/img/patch.jpg?ids=4,7,9`` (JPEG: a sixth of the PNG's bytes, encoded 8x faster)
``/img/overlay/<source>/<target>/<variant>.png?ids=4,7,9&cmap=viridis&norm=image&sign=abs&clip=99&fa=1``
``/img/mask.png?ids=4,7,9&cls=nuclei`` (ground-truth outlines)
``/img/legend/<source>/<target>/<variant>.png?<same display query>[&pid=12]`` (colour bar with real-scale ticks)
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from flask import Flask, Response, abort, request

from histoxai.dashboard.overlays import Renderer
from histoxai.dashboard.state import CLIPS, CMAPS, NORMS, SIGNS

MAX_AGE_S = 600
MAX_SHEET = 256
"""Most tiles one sheet holds (the largest page)."""


def _ids(pids: Sequence[int]) -> str:
    return "ids=" + ",".join(str(int(p)) for p in pids)


def patch_src(pids: Sequence[int]) -> str:
    """URL of the sheet of patches ``pids``."""
    return f"/img/patch.jpg?{_ids(pids)}"


def mask_base(pids: Sequence[int]) -> str:
    """Outline sheet URL without its class (the browser appends ``&cls=<mask>``)."""
    return f"/img/mask.png?{_ids(pids)}"


def _path(source: str, target: str, variant: str) -> str:
    return "/".join(quote(p, safe="") for p in (source, target, variant))


def overlay_base(source: str, target: str, variant: str, pids: Sequence[int]) -> str:
    """Overlay sheet URL without its display query (the browser appends the current one)."""
    return f"/img/overlay/{_path(source, target, variant)}.png?{_ids(pids)}"


def legend_base(source: str, target: str, variant: str, pid: int | None = None) -> str:
    """Legend URL without its display query; ``pid``: real scale of that image."""
    tail = f"?pid={int(pid)}" if pid is not None else ""
    return f"/img/legend/{_path(source, target, variant)}.png{tail}"


def with_query(base: str, query: str) -> str:
    """``base`` with ``query`` appended (``?`` or ``&``); the browser does the same."""
    return f"{base}{'&' if '?' in base else '?'}{query}"


def sheet_ids() -> tuple[int, ...]:
    """The ``ids`` of the request: 1 to ``MAX_SHEET`` patch ids; 400 otherwise."""
    parts = request.args.get("ids", "").split(",")
    if not 1 <= len(parts) <= MAX_SHEET or not all(p.isdigit() and len(p) < 10 for p in parts):
        abort(400)
    return tuple(int(p) for p in parts)


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

    def image(data: bytes, mimetype: str = "image/png") -> Response:
        resp = Response(data, mimetype=mimetype)
        resp.headers["Cache-Control"] = f"private, max-age={MAX_AGE_S}"
        return resp

    @server.route("/img/patch.jpg")
    def patch_sheet():
        try:
            return image(renderer.patch_sheet(sheet_ids()), "image/jpeg")
        except KeyError:
            abort(404)

    @server.route("/img/overlay/<source>/<target>/<variant>.png")
    def overlay_sheet(source: str, target: str, variant: str):
        ids, args = sheet_ids(), display_args()
        try:
            return image(renderer.overlay_sheet(source, target, variant, ids, *args))
        except KeyError:
            abort(404)

    @server.route("/img/legend/<source>/<target>/<variant>.png")
    def legend_image(source: str, target: str, variant: str):
        cmap, norm, sign, clip, _ = display_args()
        pid = request.args.get("pid")
        if pid is not None and not pid.isdigit():
            abort(400)
        try:
            return image(
                renderer.legend_png(
                    source, target, variant, None if pid is None else int(pid), cmap, norm, sign, clip
                )
            )
        except KeyError:
            abort(404)

    @server.route("/img/mask.png")
    def mask_sheet():
        ids, cls = sheet_ids(), request.args.get("cls", "")
        if cls not in renderer.catalog.masks:
            abort(404)
        try:
            return image(renderer.mask_sheet(ids, cls))
        except KeyError:
            abort(404)

    @server.route("/img/report/<name>/<int:i>.png")
    def report_figure(name: str, i: int):
        # Only charts found at start-up, by position: nothing from the request is a path.
        paths = renderer.catalog.figures.get(name, [])
        if not 0 <= i < len(paths):
            abort(404)
        return image(paths[i].read_bytes())

    @server.route("/export/table.csv")
    def export_table():
        from histoxai.dashboard.export import table_csv
        from histoxai.dashboard.state import parse_view

        view = parse_view(request.query_string.decode(), renderer.catalog)
        resp = Response(table_csv(renderer.catalog, view), mimetype="text/csv")
        resp.headers["Content-Disposition"] = (
            f'attachment; filename="histoxai-{view.target}-{view.variant}.csv"'
        )
        return resp

    @server.route("/export/<page>.<fmt>")
    def export_figure(page: str, fmt: str):
        from histoxai.dashboard.export import FIGURE_PAGES, grid_figure
        from histoxai.dashboard.state import parse_view

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
