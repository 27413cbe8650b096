"""Build the Dash app for a set of stores and serve it.

Example:
    >>> from dashboard import Settings, create_app
    >>> app = create_app(Settings(patches_dir="data/patches", saliency_root="data/saliency"))
    >>> app.run(host="127.0.0.1", port=8050)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import flask
from dash import Dash

from dashboard.auth import check_bind, install_login
from dashboard.callbacks import register
from dashboard.catalog import Catalog, load_catalog
from dashboard.layout import shell
from dashboard.overlays import Renderer
from dashboard.routes import register_routes


@dataclass(frozen=True)
class Settings:
    """Where the stores are and how to serve them (built from ``params.yaml`` by the CLI).

    Attributes:
        patches_dir: the patch store.
        saliency_dirs: saliency stores; empty: every subdirectory of ``saliency_root``.
        saliency_root: see ``saliency_dirs``.
        reports_dir: for ``evaluate/*/metrics.json`` and ``xai_eval/*/ranking.json``.
        page_size: tiles per page by default.
        cache_size: rendered PNGs kept in memory.
        users: ``{user: password hash}``; login is required when not empty.
        secret_key: signs the login session cookie (random per process when None).
    """

    patches_dir: str | Path
    saliency_dirs: tuple[str | Path, ...] = ()
    saliency_root: str | Path | None = None
    reports_dir: str | Path | None = None
    page_size: int = 48
    cache_size: int = 4096
    users: Mapping[str, str] = field(default_factory=dict)
    secret_key: bytes | None = None


def use_fast_json() -> None:
    """Serialise callback results with plotly's ``json`` engine (process-wide).

    With orjson installed plotly first walks every element in Python to clean it; for a
    page of tiles (plain dicts and strings) the ``json`` engine is 3-5x faster.
    """
    import plotly.io as pio

    pio.json.config.default_engine = "json"


def create_app(settings: Settings, catalog: Catalog | None = None) -> Dash:
    """The Dash app (its Flask server is ``app.server``) showing the configured stores."""
    use_fast_json()
    if catalog is None:
        catalog = load_catalog(
            settings.patches_dir, settings.saliency_dirs, settings.saliency_root, settings.reports_dir
        )
    server = flask.Flask("histoxai-dashboard")
    server.secret_key = settings.secret_key or os.urandom(32)
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    install_login(server, dict(settings.users))
    app = Dash(
        __name__,
        server=server,
        title="histoxai dashboard",
        update_title=None,
        suppress_callback_exceptions=True,
        assets_folder=str(Path(__file__).with_name("assets")),
    )
    app.layout = shell(settings.page_size)
    renderer = Renderer(catalog, settings.cache_size)
    register_routes(server, renderer)
    register(app, catalog, settings.page_size)
    app.catalog = catalog  # for tests and the CLI summary
    app.image_renderer = renderer
    return app


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8050, insecure_public: bool = False
) -> None:
    """Check the bind address, build the app and serve it until interrupted."""
    check_bind(host, bool(settings.users), insecure_public)
    app = create_app(settings)
    cat = app.catalog
    print(
        f"dashboard: {len(cat.patches) if cat.patches else 0} patches, saliency stores {list(cat.sources)}, "
        f"targets {list(cat.tables)}"
        + (f"; {len(cat.problems)} problem(s), see the Main page" if cat.problems else "")
    )
    login = "login required" if settings.users else "no login"
    print(f"dashboard: serving on http://{host}:{port}/ ({login}); Ctrl+C stops it")
    app.run(host=host, port=port, debug=False)
