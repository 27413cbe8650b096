import os

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from histoxai.config import ModelConfig
from histoxai.models import build_regressor
from histoxai.tracking import (
    data_lineage,
    load_registered_model,
    log_metrics,
    promote,
    publish_version,
    register_regressor,
    resolve_tracking_uri,
    start_run,
)

CFG = ModelConfig(backbone="test_resnet", targets=("md", "cc"), hidden_width=8, feature_width=4)


def _model(seed: int):
    torch.manual_seed(seed)
    return build_regressor(CFG, [1.0, 10.0], [0.5, 4.0]).eval()


def test_tracking_uri_from_the_caller_or_the_repo_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path, check=False) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("", tmp_path).endswith("/mlflow.db")


def test_lineage_hash_comes_from_dvc_lock_else_the_index(tiny_store, tmp_path):
    plain = data_lineage(tiny_store.root, tmp_path)
    assert plain["data.hash_kind"] == "index-sha256" and len(plain["data.hash"]) == 64
    assert plain["data.source"] == "test"
    rel = tiny_store.root.relative_to(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        f"schema: '2.0'\nstages:\n  prepare:\n    cmd: histoxai prepare\n    outs:\n"
        f"    - path: {rel}\n      hash: md5\n      md5: 0123abcd.dir\n"
    )
    dvc = data_lineage(tiny_store.root, tmp_path)
    assert dvc["data.hash"] == "0123abcd.dir" and dvc["data.hash_kind"] == "dvc"


@pytest.mark.slow
def test_register_alias_promote_and_reload(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    versions = []
    for seed in (0, 1):
        with start_run(uri, "test-exp", run_name=f"r{seed}") as run:
            run.log_params({"model.targets": ["md", "cc"], "train.lr": 1e-3})
            run.log_metrics({"val/r2_md": 0.5 + seed, "val/r2_cc": float("nan")}, step=0)
            version = register_regressor(run, _model(seed), "histoxai-test", x[:2], {"targets": "md,cc"})
            version["aliases"] = publish_version(run.client, "histoxai-test", version["model_version"])
            versions.append(version)
    assert [v["model_version"] for v in versions] == ["1", "2"]
    assert versions[0]["aliases"] == ["candidate", "champion"] and versions[1]["aliases"] == ["candidate"]

    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("histoxai-test", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("histoxai-test", "candidate").version) == "2"
    assert client.get_model_version("histoxai-test", "2").tags["targets"] == "md,cc"
    data = client.get_run(
        versions[1]["logged_model_uri"] and client.get_model_version("histoxai-test", "2").run_id
    ).data
    assert data.params["model.targets"] == "[md, cc]" and data.metrics == {"val/r2_md": 1.5}  # NaN skipped

    model, info = load_registered_model("models:/histoxai-test@champion", uri)
    assert (
        info["version"] == "1" and info["uri"] == "models:/histoxai-test/1" and "champion" in info["aliases"]
    )
    with torch.no_grad():
        assert torch.equal(
            model(torch.from_numpy(x)), _model(0)(torch.from_numpy(x))
        )  # real units, same values
    assert model.targets == ("md", "cc") and hasattr(model, "backbone")

    assert promote("histoxai-test", 2, uri) == {
        "name": "histoxai-test",
        "version": "2",
        "alias": "champion",
        "previous": "1",
    }
    model, info = load_registered_model("models:/histoxai-test@champion", uri)
    with torch.no_grad():
        assert info["version"] == "2" and torch.equal(
            model(torch.from_numpy(x)), _model(1)(torch.from_numpy(x))
        )
    # nothing process-wide: a later client (or a subprocess, through the environment) of
    # another store must not inherit this registry
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    other = f"sqlite:///{tmp_path}/other.db"
    assert MlflowClient(other).search_registered_models() == []
    with pytest.raises(ValueError, match="has no version 7.*versions: \\[1, 2\\]"):
        promote("histoxai-test", 7, uri)
    with pytest.raises(ValueError, match="not in the registry"):
        load_registered_model("models:/histoxai-test@nope", uri)
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS"):
        load_registered_model("runs:/abc/model", uri)


@pytest.mark.slow
def test_failed_run_is_marked_failed_and_helpers_log_to_a_closed_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RuntimeError, match="boom"), start_run(uri, "test-exp") as run:
        raise RuntimeError("boom")
    client = MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None
    (tmp_path / "report.md").write_text("# report\n")
    log_metrics(run.run_id, {"test/r2_md": 0.7}, uri)
    from histoxai.tracking import log_artifacts

    log_artifacts(run.run_id, [tmp_path / "report.md"], "evaluate", uri)
    assert client.get_run(run.run_id).data.metrics == {"test/r2_md": 0.7}
    assert [f.path for f in client.list_artifacts(run.run_id, "evaluate")] == ["evaluate/report.md"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        log_artifacts(run.run_id, [tmp_path / "missing.png"], None, uri)
