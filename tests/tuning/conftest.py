"""Tuning fixtures: a fresh MLflow store per test (copied from one initialised store),
base configs for tiny studies, and a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from histoxai.config import Config, apply_overrides
from tests import servers

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    # Creating MLflow's tables takes ~10 s; do it once and copy the file per test.
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, _mlflow_template) -> str:
    """A private sqlite tracking store; artifacts land under ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(_mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


SPACE = """
fixed: {model.targets: [md, fa], model.registered_name: tiny-mdfa}
params:
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  model.backbone: {type: categorical, choices: [resnet10t, convnext_atto]}
"""


@pytest.fixture
def tiny_space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def tune_config(tmp_path: Path, space: Path, **tune) -> Config:
    """Defaults with a tiny study under ``tmp_path`` (fake trainer unless given)."""
    values = {
        "tune.space": str(space),
        "tune.dir": str(tmp_path / "optuna"),
        "tune.study_name": "tiny",
        "tune.n_trials": 3,
        "tune.sampler": "random",
        "tune.trainer": "tests.tuning.fakes:quick_train",
        "train.epochs": 2,
    }
    values.update({f"tune.{k}": v for k, v in tune.items()})
    return apply_overrides(Config(), values)


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a database on a PostgreSQL 15 server started for the session.

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses root).
    """
    from tests.conftest import require

    require((PG_BIN / "initdb").is_file(), f"PostgreSQL binaries not found in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="histoxai-pg-", dir="/tmp"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    port = servers.free_port()
    server = subprocess.Popen(
        [
            *as_user,
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-k",
            str(sock),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import psycopg2

    deadline = time.time() + 30
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.2)
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE optuna")
    conn.close()
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    subprocess.run(
        [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"], capture_output=True
    )
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    shutil.rmtree(root, ignore_errors=True)
