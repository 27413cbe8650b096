"""``histoxai dashboard``: settings from params + env, password hashes, public-bind refusal."""

from __future__ import annotations

import io

import yaml
from werkzeug.security import check_password_hash

import dashboard.app
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

    monkeypatch.setattr(dashboard.app, "serve", serve)
    monkeypatch.setenv("HISTOXAI_DASH_USERS", "ana:pbkdf2:sha256:1$salt$abc")
    params = _params(
        tmp_path, pipeline, page_size=24, port=8123, saliency_dirs=[str(pipeline["saliency"] / "cc")]
    )
    assert main(["dashboard", "--params", params, "--host", "0.0.0.0"]) == 0
    assert (seen["h"], seen["p"], seen["login"]) == ("0.0.0.0", 8123, True)
    assert seen["cfg"].page_size == 24 and list(seen["app"].catalog.sources) == ["cc"]
    assert str(seen["app"].catalog.patches.root) == str(pipeline["patches"])
