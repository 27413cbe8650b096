"""Serve the Dash dashboard for the stores of a pipeline run.

Run::

    histoxai dashboard                              # http://127.0.0.1:8050, all data/saliency/*
    histoxai dashboard --port 8060 --set dashboard.saliency_dirs=[data/saliency/mdfa]
    histoxai dashboard --hash-password              # print a hash for HISTOXAI_DASH_USERS
    HISTOXAI_DASH_USERS="ana:$(histoxai dashboard --hash-password)" histoxai dashboard --host 0.0.0.0

Login is on when users are given (env ``HISTOXAI_DASH_USERS=user:hash,...`` and/or
``dashboard.users_file``); ``HISTOXAI_DASH_SECRET`` signs the session cookie. A
non-loopback ``--host`` is served by waitress; put a TLS proxy in front of it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from histoxai.config import Config, port_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: dashboard.host)")
    parser.add_argument("--port", type=port_number, help="port 1..65535 (default: dashboard.port)")
    parser.add_argument(
        "--insecure-public",
        action="store_true",
        help="allow a non-loopback --host without login (not advised)",
    )
    parser.add_argument(
        "--hash-password", action="store_true", help="read a password (prompt or stdin), print its hash, exit"
    )


def run(cfg: Config, args: argparse.Namespace | None = None) -> None:
    """Serve the dashboard (or print a password hash with ``--hash-password``)."""
    # `dashboard` imports histoxai, never the reverse: imported here, at the CLI entry only.
    from dashboard.app import create_app, serve
    from dashboard.auth import check_bind, hash_password, parse_users, read_users_file

    if args is not None and args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        print(hash_password(password))
        return
    d = cfg.dashboard
    users = parse_users(os.environ.get("HISTOXAI_DASH_USERS", ""), "HISTOXAI_DASH_USERS")
    if d.users_file:
        users.update(read_users_file(d.users_file))
    host = getattr(args, "host", None) or d.host
    port = getattr(args, "port", None) or d.port
    insecure = d.insecure_public or bool(getattr(args, "insecure_public", False))
    check_bind(host, bool(users), insecure)  # before loading anything
    secret = os.environ.get("HISTOXAI_DASH_SECRET")
    app = create_app(
        d,
        cfg.base.patches_dir,
        saliency_root=cfg.base.saliency_dir,
        reports_dir=cfg.base.reports_dir,
        users=users,
        secret_key=secret.encode() if secret else None,
    )
    serve(app, d, host, port, login=bool(users), insecure_public=insecure)
