"""``histoxai dashboard``: settings from params + env, password hashes, public-bind refusal."""

from __future__ import annotations

import io

import yaml
from werkzeug.security import check_password_hash

import histoxai.dashboard.app
from histoxai.cli import main


def _params(tmp_path, pipeline, **dash) -> str:
    f = tmp_path / "params.yaml"
    base = {
        "patches_dir": str(pipeline["patches"]),
        "saliency_dir": str(pipeline["saliency"]),
        "reports_dir": str(pipeline["reports"]),
    }
    f.write_text(yaml.safe_dump({"base": base, "dashboard": dash}))
    return str(f)


def test_hash_password_prints_a_checkable_hash(tmp_path, pipeline, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["dashboard", "--params", _params(tmp_path, pipeline), "--hash-password"]) == 0
    assert check_password_hash(capsys.readouterr().out.strip(), "s3cret")


def test_public_host_without_login_is_refused(tmp_path, pipeline, monkeypatch, capsys):
    monkeypatch.delenv("HISTOXAI_DASH_USERS", raising=False)
    assert main(["dashboard", "--params", _params(tmp_path, pipeline), "--host", "0.0.0.0"]) == 2
    assert "without login" in capsys.readouterr().err


def test_settings_come_from_params_and_env(tmp_path, pipeline, monkeypatch):
    seen = {}

    def serve(app, cfg, host, port, login, insecure_public):
        seen.update(app=app, cfg=cfg, h=host, p=port, login=login)

    monkeypatch.setattr(histoxai.dashboard.app, "serve", serve)
    monkeypatch.setenv("HISTOXAI_DASH_USERS", "ana:pbkdf2:sha256:1$salt$abc")
    params = _params(
        tmp_path, pipeline, page_size=24, port=8123, saliency_dirs=[str(pipeline["saliency"] / "cc")]
    )
    assert main(["dashboard", "--params", params, "--host", "0.0.0.0"]) == 0
    assert (seen["h"], seen["p"], seen["login"]) == ("0.0.0.0", 8123, True)
    assert seen["cfg"].page_size == 24 and list(seen["app"].catalog.sources) == ["cc"]
    assert str(seen["app"].catalog.patches.root) == str(pipeline["patches"])


def test_public_serving_uses_waitress_and_loopback_flask(pipeline, catalog, monkeypatch):
    import waitress

    from histoxai.config import DashboardConfig
    from histoxai.dashboard.app import create_app, serve

    seen = []
    monkeypatch.setattr(
        waitress, "serve", lambda wsgi, **kw: seen.append(("waitress", kw["host"], kw["threads"]))
    )
    cfg = DashboardConfig(threads=3)
    app = create_app(cfg, pipeline["patches"], catalog=catalog)
    monkeypatch.setattr(app, "run", lambda host, port, debug: seen.append(("flask", host, debug)))
    serve(app, cfg, "0.0.0.0", 8050, login=True, insecure_public=False)
    serve(app, cfg, "127.0.0.1", 8050, login=False, insecure_public=False)
    serve(
        app,
        DashboardConfig(server="waitress", threads=3),
        "127.0.0.1",
        8050,
        login=False,
        insecure_public=False,
    )
    assert seen == [("waitress", "0.0.0.0", 3), ("flask", "127.0.0.1", False), ("waitress", "127.0.0.1", 3)]
