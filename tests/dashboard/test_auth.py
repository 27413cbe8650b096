"""Guards: users from text/files, the session login (expiry, revocation, lockout), the Host
allow-list, security headers, and the refusal to serve publicly without login."""

from __future__ import annotations

import time

import pytest

from histoxai.config import DashboardConfig
from histoxai.dashboard.app import create_app
from histoxai.dashboard.auth import (
    Throttle,
    check_bind,
    hash_password,
    host_allowed,
    parse_users,
    read_users_file,
)


def test_users_parse_from_text_and_file(tmp_path):
    h = hash_password("pw")
    assert parse_users(f"ana:{h}, bob:{h}\n") == {"ana": h, "bob": h}
    f = tmp_path / "users"
    f.write_text(f"# who may log in\nana:{h}\n")
    assert read_users_file(f) == {"ana": h}
    with pytest.raises(ValueError, match="entry 1"):
        parse_users("ana-no-hash")
    with pytest.raises(FileNotFoundError, match="users file"):
        read_users_file(tmp_path / "absent")


def test_public_bind_without_login_is_refused():
    check_bind("127.0.0.1", login=False, insecure_public=False)
    check_bind("::1", login=False, insecure_public=False)
    check_bind("0.0.0.0", login=True, insecure_public=False)
    check_bind("0.0.0.0", login=False, insecure_public=True)
    with pytest.raises(ValueError, match="without login"):
        check_bind("0.0.0.0", login=False, insecure_public=False)


@pytest.fixture(scope="module")
def client(pipeline, catalog):
    app = create_app(
        DashboardConfig(), pipeline["patches"], users={"ana": hash_password("secret")}, catalog=catalog
    )
    return app.server.test_client()


def test_everything_needs_login(client):
    resp = client.get("/single?target=md")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")
    assert client.get("/img/patch.jpg?ids=1").status_code == 401
    assert client.get("/_dash-layout").status_code == 401


def test_wrong_password_is_rejected_and_right_one_logs_in(client):
    resp = client.post("/login", data={"user": "ana", "password": "nope", "next": "/single"})
    assert resp.status_code == 401 and b"Wrong user name or password" in resp.data
    assert client.post("/login", data={"user": "eve", "password": "secret"}).status_code == 401
    resp = client.post("/login", data={"user": "ana", "password": "secret", "next": "/single?target=md"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/single?target=md"
    assert client.get("/img/patch.jpg?ids=1").status_code == 200
    client.get("/logout")
    assert client.get("/img/patch.jpg?ids=1").status_code == 401


def test_login_never_redirects_elsewhere(client):
    resp = client.post("/login", data={"user": "ana", "password": "secret", "next": "https://evil.example/"})
    assert resp.headers["Location"] == "/"
    client.get("/logout")


def test_a_revoked_or_expired_session_needs_login_again(pipeline, catalog):
    app = create_app(
        DashboardConfig(session_hours=1e-6),
        pipeline["patches"],
        users={"ana": hash_password("pw")},
        catalog=catalog,
    )
    client = app.server.test_client()
    assert client.post("/login", data={"user": "ana", "password": "pw"}).status_code == 302
    time.sleep(0.05)  # the session lived 3.6 ms
    assert client.get("/img/patch.jpg?ids=1").status_code == 401
    app = create_app(
        DashboardConfig(), pipeline["patches"], users={"ana": hash_password("pw")}, catalog=catalog
    )
    client = app.server.test_client()
    client.post("/login", data={"user": "ana", "password": "pw"})
    assert client.get("/img/patch.jpg?ids=1").status_code == 200
    app.server.config["histoxai_sessions"].clear()  # revoked on the server, cookie unchanged
    assert client.get("/img/patch.jpg?ids=1").status_code == 401


def test_repeated_failures_lock_the_user_out(pipeline, catalog):
    cfg = DashboardConfig(login_attempts=3, lockout_s=60)
    client = create_app(
        cfg, pipeline["patches"], users={"ana": hash_password("pw")}, catalog=catalog
    ).server.test_client()
    for _ in range(3):
        assert client.post("/login", data={"user": "ana", "password": "guess"}).status_code == 401
    resp = client.post("/login", data={"user": "ana", "password": "pw"})
    assert resp.status_code == 429 and b"Too many failed logins" in resp.data


def test_throttle_forgets_old_failures():
    t = Throttle(limit=2, window_s=10)
    t.fail("a", now=0.0)
    t.fail("a", now=1.0)
    assert t.locked("a", now=5.0) and not t.locked("b", now=5.0)
    assert not t.locked("a", now=11.5)


@pytest.mark.parametrize(
    "host,ok",
    [
        ("127.0.0.1:8050", True),
        ("localhost", True),
        ("[::1]:8050", True),
        ("evil.example:8050", False),
        ("dash.lab.org", True),
        ("127.0.0.1.evil.example", False),
    ],
)
def test_only_allowed_host_headers_are_served(pipeline, catalog, host, ok):
    assert host_allowed(host, ("dash.lab.org",)) is ok
    app = create_app(DashboardConfig(allowed_hosts=("dash.lab.org",)), pipeline["patches"], catalog=catalog)
    resp = app.server.test_client().get("/img/patch.jpg?ids=1", headers={"Host": host})
    assert resp.status_code == (200 if ok else 421)


def test_security_headers_on_every_response(client):
    for url in ("/login", "/img/patch.jpg?ids=1", "/"):
        h = client.get(url).headers
        assert h["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
