"""Login: users from text/files, the session guard, and the refusal to serve publicly without it."""

from __future__ import annotations

import pytest

from dashboard.app import Settings, create_app
from dashboard.auth import check_bind, hash_password, parse_users, read_users_file


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
    app = create_app(Settings(pipeline["patches"], users={"ana": hash_password("secret")}), catalog=catalog)
    return app.server.test_client()


def test_everything_needs_login(client):
    resp = client.get("/single?target=md")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")
    assert client.get("/img/patch/1.png").status_code == 401
    assert client.get("/_dash-layout").status_code == 401


def test_wrong_password_is_rejected_and_right_one_logs_in(client):
    resp = client.post("/login", data={"user": "ana", "password": "nope", "next": "/single"})
    assert resp.status_code == 401 and b"Wrong user name or password" in resp.data
    assert client.post("/login", data={"user": "eve", "password": "secret"}).status_code == 401
    resp = client.post("/login", data={"user": "ana", "password": "secret", "next": "/single?target=md"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/single?target=md"
    assert client.get("/img/patch/1.png").status_code == 200
    client.get("/logout")
    assert client.get("/img/patch/1.png").status_code == 401


def test_login_never_redirects_elsewhere(client):
    resp = client.post("/login", data={"user": "ana", "password": "secret", "next": "https://evil.example/"})
    assert resp.headers["Location"] == "/"
    client.get("/logout")
