"""Guards in front of every route: Host-header allow-list, security headers and an
optional session login.

Users are ``name:hash`` pairs (hashes from :func:`hash_password`, i.e.
``histoxai dashboard --hash-password``), given as text (``HISTOXAI_DASH_USERS``, comma
separated) or a file (one pair a line, ``#`` comments). Serving on a non-loopback
address without login is refused unless explicitly overridden (:func:`check_bind`).

- Host header: only loopback names and ``DashboardConfig.allowed_hosts`` are answered, so a
  web page cannot read a local dashboard through DNS rebinding.
- Headers: ``X-Frame-Options: DENY`` and a Content-Security-Policy (no framing, no other
  origins), ``nosniff``, ``Referrer-Policy: same-origin``.
- Sessions carry an id kept in server memory and an expiry; logout forgets the id, so a
  copied cookie stops working. A lost session answers callbacks with 401 and the page
  goes to the login form (``assets/dashboard.js``).
- Failed logins are counted per user name and per client address; ``login_attempts``
  within ``lockout_s`` lock both for ``lockout_s`` (429).
"""

from __future__ import annotations

import html
import ipaddress
import secrets
import threading
import time
from collections import defaultdict, deque
from datetime import timedelta
from functools import cache
from pathlib import Path
from urllib.parse import quote, urlsplit

from flask import Flask, redirect, request, session
from werkzeug.security import check_password_hash, generate_password_hash

from histoxai.config import DashboardConfig
from histoxai.errors import InputError, MissingInputError

_OPEN_PATHS = ("/login", "/logout")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'; connect-src 'self'; font-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


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
        return ipaddress.ip_address(host.strip("[]")).is_loopback
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


def host_name(host_header: str) -> str:
    """The name of a Host header, without port (``[::1]:8050`` -> ``::1``)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    name = host_name(host_header)
    return "*" in allowed or name in LOOPBACK_NAMES or name in {a.lower() for a in allowed}


class Throttle:
    """Failures per key within a window; a key with ``limit`` of them is locked."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._fails: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        q = self._fails[key]
        while q and q[0] < now - self.window_s:
            q.popleft()
        return q

    def locked(self, *keys: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(len(self._recent(k, now)) >= self.limit for k in keys)

    def fail(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


def logged_in_user(users: dict[str, str]) -> str | None:
    """The session's user when login is on (None otherwise or outside a request)."""
    try:
        return session.get("user") if users else None
    except RuntimeError:
        return None


def install_guards(server: Flask, cfg: DashboardConfig, users: dict[str, str]) -> None:
    """Guard every route of ``server``: Host header, headers, and a login for ``users``."""
    allowed = tuple(cfg.allowed_hosts)
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
    )

    @server.before_request
    def _host():
        if not host_allowed(request.host, allowed):
            return (f"host {host_name(request.host)!r} is not served (dashboard.allowed_hosts)", 421)
        return None

    @server.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        return resp

    if users:
        install_login(server, cfg, users)


def install_login(server: Flask, cfg: DashboardConfig, users: dict[str, str]) -> None:
    """A session login for ``users`` in front of every route of ``server``."""
    live: dict[str, tuple[str, float]] = {}  # session id -> (user, expiry, monotonic clock)
    throttle = Throttle(cfg.login_attempts, cfg.lockout_s)
    lifetime_s = cfg.session_hours * 3600.0

    def current_user() -> str | None:
        sid = session.get("sid")
        entry = live.get(sid) if sid else None
        if entry is None or entry[1] < time.monotonic() or entry[0] not in users:
            live.pop(sid, None)
            return None
        return entry[0]

    server.config["histoxai_sessions"] = live  # for tests: revoke, count

    @server.before_request
    def _guard():
        if request.path in _OPEN_PATHS or current_user() is not None:
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
        keys = (f"user:{user}", f"addr:{request.remote_addr}")
        if throttle.locked(*keys):
            return _login_page(target, "Too many failed logins: try again in a few minutes."), 429
        if check_password_hash(users.get(user) or _dummy_hash(), password) and user in users:
            throttle.clear(keys[0])
            session.clear()
            sid = secrets.token_urlsafe(24)
            live[sid] = (user, time.monotonic() + lifetime_s)
            session.permanent = True
            session["sid"], session["user"] = sid, user
            return redirect(target)
        throttle.fail(*keys)
        return _login_page(target, "Wrong user name or password."), 401

    @server.route("/logout")
    def logout():
        live.pop(session.get("sid"), None)
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
