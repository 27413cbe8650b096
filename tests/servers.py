"""Real servers for tests: a free local port and an ``mlflow server`` started and stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HEALTHY_WITHIN_S = 240  # a busy 2-core machine needs up to a minute or two


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, *store_args: str) -> Iterator[str]:
    """Run ``mlflow server <store_args>`` on a free port; yield its URI once ``/health``
    answers, then stop it with its workers (its log is ``folder/server.log``).

    Args:
        folder: where the log goes.
        store_args: the backend and artifact flags, e.g. ``--backend-store-uri``, URI.
    """
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server", *store_args,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, uri, log_path)
            yield uri
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _wait_healthy(proc: subprocess.Popen, uri: str, log_path: Path) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"mlflow server not healthy after {HEALTHY_WITHIN_S} s: {log_path.read_text()[-2000:]}"
            )
        time.sleep(0.5)
