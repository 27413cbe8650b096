"""Flask routes serving the rendered PNGs on the Dash server.

Only patches of the loaded stores are served: ids are parsed as integers by the URL
rule, store, target, variant, colour map and normalisation are looked up among the
loaded names, and nothing taken from a request is ever used as a file path.

``/img/patch/<pid>.png``
``/img/overlay/<source>/<target>/<variant>/<pid>.png?cmap=viridis&alpha=50&norm=image``
``/img/colourbar/<cmap>.png``
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Response, abort, request

from dashboard.overlays import Renderer
from dashboard.state import CMAPS, NORMS

MAX_AGE_S = 600


def patch_src(pid: int) -> str:
    return f"/img/patch/{int(pid)}.png"


def overlay_src(source: str, target: str, variant: str, pid: int, cmap: str, alpha: float, norm: str) -> str:
    """URL of an overlay tile; ``alpha`` in [0, 1] is sent as an integer percentage."""
    path = "/".join(quote(p, safe="") for p in (source, target, variant))
    return f"/img/overlay/{path}/{int(pid)}.png?cmap={cmap}&alpha={round(alpha * 100)}&norm={norm}"


def colour_bar_src(cmap: str) -> str:
    return f"/img/colourbar/{cmap}.png"


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
        cmap = request.args.get("cmap", "viridis")
        norm = request.args.get("norm", "image")
        try:
            alpha = int(request.args.get("alpha", "50"))
        except ValueError:
            abort(400)
        if cmap not in CMAPS or norm not in NORMS or not 0 <= alpha <= 100:
            abort(400)
        try:
            return png(renderer.overlay_png(source, target, variant, pid, cmap, alpha, norm))
        except KeyError:
            abort(404)

    @server.route("/img/colourbar/<cmap>.png")
    def colour_bar_image(cmap: str):
        if cmap not in CMAPS:
            abort(404)
        return png(renderer.colour_bar_png(cmap))

    @server.route("/img/<path:rest>")
    def no_image(rest: str):
        # Anything else under /img/ is 404 (not Dash's catch-all page).
        abort(404)
