"""Scale-out tracking (docs/tuning.md): an `mlflow server` on PostgreSQL with a shared-filesystem
artifact root, used by two tune workers that run as separate processes, as on two machines."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest

from histoxai.config import dump_yaml
from histoxai.tracking import resolve_tracking_uri, studies
from tests import servers
from tests.tuning.conftest import REPO, tune_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _create_database(postgres_url: str, name: str) -> str:
    import psycopg2

    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    conn = psycopg2.connect(host=host, port=int(port), user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def mlflow_on_postgres(tmp_path, postgres_url):
    """`mlflow server` with a PostgreSQL backend store and artifacts written by the clients
    straight to a shared folder (``--no-serve-artifacts``), as docs/tuning.md describes."""
    backend = _create_database(postgres_url, f"mlflow_{os.getpid()}_{int(time.time())}")
    shared = tmp_path / "shared" / "mlartifacts"
    shared.mkdir(parents=True)
    store = (
        "--backend-store-uri",
        backend,
        "--default-artifact-root",
        shared.as_uri(),
        "--no-serve-artifacts",
    )
    with servers.mlflow_server(tmp_path, *store) as uri:
        yield uri, shared


def test_two_machines_share_one_study_and_one_tracking_server(
    tmp_path, tiny_space, postgres_url, mlflow_on_postgres
):
    uri, shared = mlflow_on_postgres
    assert resolve_tracking_uri(uri, must_exist=True) == uri
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}",
        "MLFLOW_TRACKING_URI": uri,
        "FAKE_EPOCH_S": "1",  # long enough for both workers to overlap
    }
    workers = []
    for machine in ("a", "b"):  # separate folders: nothing shared but the two servers
        home = tmp_path / machine
        home.mkdir()
        cfg = tune_config(home, tiny_space, n_trials=4, storage=postgres_url, study_name="scaleout")
        (home / "params.yaml").write_text(dump_yaml(cfg))
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "histoxai.cli", "tune"], cwd=home, env=env, stdout=subprocess.PIPE
            )
        )
    outputs = [w.communicate(timeout=600)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="scaleout", storage=postgres_url)
    assert len(study.trials) == 4  # the budget counts across machines
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both machines ran trials
    parent = study.user_attrs["mlflow_parent_run_id"]
    trial_runs = studies.trial_runs(uri, parent)
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs) == [0, 1, 2, 3]
    # artifacts went straight to the shared folder: the study's plots and the trials' models
    assert list(shared.rglob("optimization_history.html"))
    assert studies.client(uri).get_registered_model("tiny-mdfa").aliases.get("champion")
