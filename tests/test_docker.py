"""The Docker image and the compose stack.

Where Docker can run containers, the MLflow part of the stack is started and its health
checked. Otherwise the compose file is linted: ``docker compose config`` when the CLI has
compose, and always a structural check of what the stack relies on (services defined,
dependencies and volumes declared, the tracking server on PostgreSQL + an artifact store,
the dashboard on a public address, the image's torch the pinned one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}


def _ok(cmd: list[str]) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


DOCKER_RUNS = _ok(["docker", "info"])
HAS_COMPOSE = _ok(["docker", "compose", "version"])


def test_compose_file_structure():
    assert not {k for k in COMPOSE if not k.startswith("x-")} - TOP_KEYS
    volumes = set(COMPOSE.get("volumes") or {})
    for name, svc in SERVICES.items():
        assert "image" in svc or "build" in svc, name
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on undefined service {dep}"
            assert spec.get("condition", "service_started") in CONDITIONS
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck for {name} to wait on"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: volume {source} is not declared"
            else:
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
        for port in svc.get("ports") or []:
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), f"{name}: {port} should bind to loopback"


def test_stack_has_tracking_on_postgres_and_an_artifact_store():
    command = " ".join(SERVICES["mlflow"]["command"])
    assert "--backend-store-uri postgresql" in command and "@postgres:5432/" in command
    assert "--artifacts-destination s3://" in command
    assert SERVICES["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert SERVICES["pipeline"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "dvc repro" in " ".join(SERVICES["pipeline"]["command"])
    dash = SERVICES["dashboard"]
    assert dash["command"][:2] == ["histoxai", "dashboard"] and "0.0.0.0" in dash["command"]
    assert "HISTOXAI_DASH_USERS" in dash["environment"]  # public address: login required
    tune = " ".join(SERVICES["tune"]["command"])
    assert "--storage postgresql" in tune and "/optuna" in tune
    assert "CREATE DATABASE optuna" in (REPO / "docker/postgres-init.sql").read_text()


def test_dockerfile_installs_the_pinned_torch_for_cpu():
    text = (REPO / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text
    assert "sed -n 's/^ *\"torch==" in text  # the version is read from pyproject.toml
    pins = re.findall(r'^\s*"(torch|torchvision)==([^"]+)",', (REPO / "pyproject.toml").read_text(), re.M)
    assert dict(pins).keys() == {"torch", "torchvision"}
    assert 'pip install ".[server]"' in text and "boto3" in (REPO / "pyproject.toml").read_text()


@pytest.mark.skipif(not HAS_COMPOSE, reason="docker compose CLI not available (structure checked above)")
def test_docker_compose_config_accepts_the_file():
    env = {"HISTOXAI_DASH_USERS": "u:h", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    out = subprocess.run(
        ["docker", "compose", "-f", str(REPO / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (DOCKER_RUNS and HAS_COMPOSE), reason="Docker cannot run containers here")
def test_tracking_stack_starts_and_is_healthy():
    env = {"HISTOXAI_DASH_USERS": "u:h", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    base = ["docker", "compose", "-f", str(REPO / "compose.yaml"), "-p", "histoxai-test"]
    try:
        up = subprocess.run([*base, "up", "-d", "--build", "--wait", "mlflow"], capture_output=True, env=env)
        assert up.returncode == 0, up.stderr.decode()[-3000:]
        with urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=10) as r:
            assert r.status == 200
    finally:
        subprocess.run([*base, "down", "-v"], capture_output=True, env=env)
