"""Build the Dash app for a set of stores and serve it.

Example:
    >>> from histoxai.config import DashboardConfig
    >>> from histoxai.dashboard.app import create_app
    >>> app = create_app(DashboardConfig(), "data/patches", saliency_root="data/saliency")
    >>> app.run(host="127.0.0.1", port=8050)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import flask
from dash import Dash

from histoxai.config import DashboardConfig
from histoxai.dashboard.auth import check_bind, install_guards, logged_in_user
from histoxai.dashboard.callbacks import register
from histoxai.dashboard.catalog import Catalog, load_catalog
from histoxai.dashboard.layout import shell
from histoxai.dashboard.overlays import Renderer
from histoxai.dashboard.routes import register_routes


def use_fast_json() -> None:
    """Serialise callback results with plotly's ``json`` engine (process-wide).

    With orjson installed plotly first walks every element in Python to clean it; for a
    page of tiles (plain dicts and strings) the ``json`` engine is 3-5x faster.
    """
    import plotly.io as pio

    pio.json.config.default_engine = "json"


def create_app(
    cfg: DashboardConfig,
    patches_dir: str | Path,
    *,
    saliency_root: str | Path | None = None,
    reports_dir: str | Path | None = None,
    users: Mapping[str, str] | None = None,
    secret_key: bytes | None = None,
    catalog: Catalog | None = None,
) -> Dash:
    """The Dash app (its Flask server is ``app.server``) showing the configured stores.

    Args:
        cfg: the ``dashboard`` config section (stores, page size, cache, login limits).
        patches_dir: the patch store (``cfg.patches_dir`` when set).
        saliency_root: where saliency stores are found when ``cfg.saliency_dirs`` is empty.
        reports_dir: ``evaluate/*/all_metrics.json`` and ``xai_eval/*/ranking.json``.
        users: ``{user: password hash}``; login is required when not empty.
        secret_key: signs the session cookie (random per process when None: sessions
            end with the process).
    """
    use_fast_json()
    users = dict(users or {})
    if catalog is None:
        catalog = load_catalog(cfg.patches_dir or patches_dir, cfg.saliency_dirs, saliency_root, reports_dir)
    server = flask.Flask("histoxai-dashboard")
    server.secret_key = secret_key or os.urandom(32)
    install_guards(server, cfg, users)
    app = Dash(
        __name__,
        server=server,
        title="histoxai dashboard",
        update_title=None,
        suppress_callback_exceptions=True,
        assets_folder=str(Path(__file__).with_name("assets")),
    )
    app.layout = lambda: shell(cfg.page_size, logged_in_user(users), catalog.masks)
    renderer = Renderer(catalog, cfg.cache_size)
    register_routes(server, renderer)
    register(app, catalog, cfg.page_size, renderer)
    app.catalog = catalog  # for tests and the CLI summary
    app.image_renderer = renderer
    return app


def serve(app: Dash, cfg: DashboardConfig, host: str, port: int, login: bool, insecure_public: bool) -> None:
    """Check the bind address and serve ``app`` until interrupted.

    Loopback addresses use Flask's server (one developer); any other address is public
    serving and uses waitress, a production WSGI server (put a TLS proxy in front).
    """
    check_bind(host, login, insecure_public)
    cat = app.catalog
    print(
        f"dashboard: {len(cat.patches) if cat.patches else 0} patches, saliency stores {list(cat.sources)}, "
        f"targets {list(cat.tables)}"
        + (f"; {len(cat.problems)} problem(s), see the Main page" if cat.problems else "")
    )
    print(
        f"dashboard: serving on http://{host}:{port}/ ({'login required' if login else 'no login'}); Ctrl+C stops it"
    )
    from histoxai.dashboard.auth import is_loopback

    if cfg.server == "flask" or (cfg.server == "auto" and is_loopback(host)):
        app.run(host=host, port=port, debug=False)
        return
    import waitress

    waitress.serve(app.server, host=host, port=port, threads=cfg.threads, ident="histoxai")
