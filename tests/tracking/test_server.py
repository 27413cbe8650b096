"""Training against a real `mlflow server` (HTTP tracking, proxied artifacts), started here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from histoxai.models import load_checkpoint
from histoxai.stages.train import train
from histoxai.tracking import load_registered_model, resolve_tracking_uri
from tests import servers
from tests.training.conftest import tiny_config


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free port with a SQLite backend; its URI and artifact folder."""
    root = tmp_path_factory.mktemp("server")
    artifacts = root / "artifacts"
    store = (
        "--backend-store-uri",
        f"sqlite:///{root / 'backend.db'}",
        "--artifacts-destination",
        str(artifacts),
    )
    with servers.mlflow_server(root, *store) as uri:
        yield uri, artifacts


@pytest.mark.slow
def test_training_against_a_tracking_server(mlflow_server, phantom, tmp_path):
    uri, artifacts = mlflow_server
    assert resolve_tracking_uri(uri, must_exist=True) == uri  # a live server passes the fail-fast check
    cfg = tiny_config(
        phantom, tmp_path, "train.epochs=3", "model.targets=[md, cc]", "model.registered_name=server-test"
    )
    info = train(cfg, tmp_path, uri, progress=False)
    assert info["tracking_uri"] == uri and info["model_uri"] == "models:/server-test/1"
    assert json.loads((tmp_path / "models" / "server-test" / "run.json").read_text()) == info

    client = MlflowClient(uri)
    run = client.get_run(info["run_id"])
    assert run.data.params["model.targets"] == "[md, cc]" and "dataset.hash" in run.data.params
    assert {"val/r2_md", "val/r2_cc", "test/r2_md", "test/r2_cc"} <= set(run.data.metrics)
    assert len(client.get_metric_history(info["run_id"], "val/loss")) == len(
        client.get_metric_history(info["run_id"], "train/loss")
    )
    assert {"config.yaml", "predictions", "run.json"} <= {
        f.path for f in client.list_artifacts(info["run_id"])
    }
    assert any(artifacts.rglob("config.yaml")) and any(
        artifacts.rglob("MLmodel")
    )  # proxied to the server's store
    mv = client.get_model_version("server-test", "1")
    assert set(mv.aliases) == {"candidate", "champion"} and mv.tags["targets"] == "md,cc"

    model, got = load_registered_model("models:/server-test@champion", uri)
    assert got["version"] == "1" and got["run_id"] == info["run_id"]
    x = torch.from_numpy(phantom.images(np.arange(12))).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # two model instances: equal up to float reassociation, not bit for bit
        torch.testing.assert_close(
            model(x),
            load_checkpoint(tmp_path / "models" / "server-test" / "model.pt")(x),
            rtol=1e-4,
            atol=1e-5,
        )
