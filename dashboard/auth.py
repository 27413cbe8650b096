"""Optional login: a session login form in front of every page, callback and image.

Users are ``name:hash`` pairs (hashes from :func:`hash_password`, i.e.
``histoxai dashboard --hash-password``), given as text (``HISTOXAI_DASH_USERS``, comma
separated) or a file (one pair a line, ``#`` comments). Serving on a non-loopback
address without login is refused unless explicitly overridden (:func:`check_bind`).
"""

from __future__ import annotations

import html
import ipaddress
from functools import cache
from pathlib import Path
from urllib.parse import quote, urlsplit

from flask import Flask, redirect, request, session
from werkzeug.security import check_password_hash, generate_password_hash

from histoxai.errors import InputError, MissingInputError

_OPEN_PATHS = ("/login", "/logout")


@cache
def _dummy_hash() -> str:
    # Checked for unknown users too, so a wrong name costs as long as a wrong password.
    return generate_password_hash("histoxai-dummy-password")


def hash_password(password: str) -> str:
    """Salted hash of ``password`` to put in the users list."""
    if not password:
        raise ValueError("the password must not be empty")
    return generate_password_hash(password)


def parse_users(text: str, where: str = "users") -> dict[str, str]:
    """``user:hash`` pairs separated by commas or new lines -> {user: hash}."""
    users: dict[str, str] = {}
    for n, item in enumerate(text.replace("\n", ",").split(","), 1):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, hashed = item.partition(":")
        if not sep or not name or "$" not in hashed:
            raise InputError(
                f"{where}: entry {n} ({name or item[:20]!r}...) is not 'user:hash'; "
                "make a hash with `histoxai dashboard --hash-password`"
            )
        users[name] = hashed
    return users


def read_users_file(path: str | Path) -> dict[str, str]:
    """Users from a file of ``user:hash`` lines."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"dashboard users file {path} does not exist")
    return parse_users(path.read_text(), where=str(path))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, login: bool, insecure_public: bool) -> None:
    """Refuse to serve on a non-loopback ``host`` without login (unless ``insecure_public``)."""
    if not is_loopback(host) and not login and not insecure_public:
        raise InputError(
            f"refusing to serve the dashboard on {host} without login: anyone on the network could "
            "browse the data. Set HISTOXAI_DASH_USERS or dashboard.users_file (hashes from "
            "`histoxai dashboard --hash-password`), bind 127.0.0.1, or pass --insecure-public"
        )


def install_login(server: Flask, users: dict[str, str]) -> None:
    """Guard every route of ``server`` with a session login for ``users``."""
    if not users:
        return

    @server.before_request
    def _guard():
        if request.path in _OPEN_PATHS or session.get("user") in users:
            return None
        if request.method == "GET" and not request.path.startswith(("/_dash", "/img/")):
            return redirect(f"/login?next={quote(request.full_path.rstrip('?'), safe='')}")
        return ("login required", 401)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        target = _safe_next(request.values.get("next", "/"))
        if request.method == "GET":
            return _login_page(target, "")
        user, password = request.form.get("user", ""), request.form.get("password", "")
        if check_password_hash(users.get(user) or _dummy_hash(), password) and user in users:
            session.clear()
            session["user"] = user
            return redirect(target)
        return _login_page(target, "Wrong user name or password."), 401

    @server.route("/logout")
    def logout():
        session.clear()
        return redirect("/login")


def _safe_next(target: str) -> str:
    # Only local paths: an absolute URL in ?next= must not send the user elsewhere.
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(target: str, error: str) -> str:
    message = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>histoxai dashboard · login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; background: #f3f5f8; color: #1f2933; margin: 0;
  display: flex; align-items: center; justify-content: center; min-height: 100vh; }}
form {{ background: #fff; padding: 28px 32px; border-radius: 8px; width: 280px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
h1 {{ font-size: 18px; margin: 0 0 16px; }} label {{ display: block; margin: 10px 0 4px; color: #52606d; }}
input {{ width: 100%; box-sizing: border-box; padding: 7px 8px; border: 1px solid #cbd2d9; border-radius: 4px; }}
button {{ margin-top: 18px; width: 100%; padding: 8px; background: #3f6fb5; color: #fff; border: 0;
  border-radius: 4px; font-weight: 600; cursor: pointer; }}
.error {{ color: #b42318; margin: 12px 0 0; }}
</style></head><body>
<form method="post" action="/login">
<h1>histoxai dashboard</h1>
<input type="hidden" name="next" value="{html.escape(target)}">
<label for="user">User</label><input id="user" name="user" autocomplete="username" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button id="login-submit" type="submit">Log in</button>{message}
</form></body></html>"""
