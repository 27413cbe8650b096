"""`histoxai train` / `histoxai promote` end to end on a tiny phantom, default SQLite store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from histoxai.cli import main
from histoxai.config import flatten, load_config, to_dict
from histoxai.data.provenance import file_sha256, store_fingerprint
from histoxai.models import load_checkpoint
from histoxai.tracking import load_registered_model
from tests.training.conftest import TINY_MODEL, TINY_TRAIN, phantom_store, tiny_config

REPO = Path(__file__).resolve().parents[2]
RUN_JSON_KEYS = {
    "run_id", "experiment_id", "tracking_uri", "model_name", "model_version", "model_uri",
    "targets", "split_scheme", "data_hash",
}  # fmt: skip
CC = ["--set", "model.targets=[cc]", "--set", "model.registered_name=histoxai-cc"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A project folder with a tiny phantom store and params file; `histoxai train` run once."""
    root = tmp_path_factory.mktemp("repo")
    store = phantom_store(root / "data" / "patches")
    cfg = tiny_config(store, root)
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        rc = main(["train", *CC])
        yield SimpleNamespace(
            root=root, store=store, rc=rc, cfg=load_config(root / "params.yaml", CC[1::2]),
            out=root / "models" / "histoxai-cc", uri=f"sqlite:///{root}/mlflow.db", mp=mp,
        )  # fmt: skip


@pytest.mark.slow
def test_train_writes_checkpoint_predictions_and_run_json(repo):
    assert repo.rc == 0
    info = __import__("json").loads((repo.out / "run.json").read_text())
    assert RUN_JSON_KEYS <= set(info)
    assert info["model_uri"] == "models:/histoxai-cc/1" and info["targets"] == ["cc"]
    assert info["tracking_uri"] == repo.uri and (repo.root / "mlflow.db").is_file()  # the default store
    assert info["predictions_sha256"] == file_sha256(repo.out / "predictions.parquet")  # one unit
    assert info["patch_size_px"] == 32 and info["index_sha256"] == store_fingerprint(repo.store)
    assert load_checkpoint(repo.out / "model.pt").checkpoint_extra["run_id"] == info["run_id"]
    pred = pd.read_parquet(repo.out / "predictions.parquet")
    assert list(pred.columns) == ["patch_id", "sample", "row", "col", "split", "y_cc", "yhat_cc"]
    assert pred["patch_id"].tolist() == list(range(len(repo.store)))
    assert set(pred["split"]) == {"train", "val", "test"}
    test = pred[pred["split"] == "test"]
    r2 = 1 - ((test.yhat_cc - test.y_cc) ** 2).sum() / ((test.y_cc - test.y_cc.mean()) ** 2).sum()
    assert r2 >= 0.5  # counting nuclei is learnable even by a tiny network in seconds
    model = load_checkpoint(repo.out / "model.pt")
    x = torch.from_numpy(repo.store.images(np.arange(8))).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        np.testing.assert_allclose(model(x)[:, 0].numpy(), pred["yhat_cc"][:8], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_run_holds_config_lineage_metrics_and_artifacts(repo):
    info = __import__("json").loads((repo.out / "run.json").read_text())
    client = MlflowClient(repo.uri)
    run = client.get_run(info["run_id"])
    params = run.data.params
    flat = flatten(repo.cfg)
    assert {k for k in flat} <= set(params)
    assert params["train.lr"] == str(repo.cfg.train.lr) and params["model.targets"] == "[cc]"
    assert params["dataset.hash"] == info["data_hash"] and params["dataset.source"] == "phantom"
    assert run.inputs.dataset_inputs[0].dataset.name == "patches"
    epochs = client.get_metric_history(run.info.run_id, "val/loss")
    assert len(epochs) >= 1 and [m.step for m in epochs] == list(range(len(epochs)))
    for name in ("val/r2_cc", "train/loss", "lr", "test/r2_cc", "test/mae_cc", "train/r2_cc", "best_epoch"):
        assert name in run.data.metrics, name
    arts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "predictions", "run.json"} <= arts
    text = client.download_artifacts(run.info.run_id, "config.yaml", str(repo.root))
    assert load_config(text) == repo.cfg  # the resolved config round-trips


@pytest.mark.slow
def test_registered_champion_predicts_like_the_checkpoint(repo):
    client = MlflowClient(repo.uri)
    mv = client.get_model_version("histoxai-cc", "1")
    assert set(mv.aliases) == {"candidate", "champion"}
    assert mv.tags["targets"] == "cc" and len(mv.tags["data_hash"]) == 64
    model, info = load_registered_model("models:/histoxai-cc@champion", repo.uri)
    assert info["version"] == "1" and model.targets == ("cc",)
    x = torch.from_numpy(repo.store.images(np.arange(16))).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_checkpoint(repo.out / "model.pt")(x), rtol=1e-5, atol=1e-5)


def test_bad_configs_and_missing_store_are_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--params", str(REPO / "params.yaml"), "--set", "model.targets=[md,xx]"]) == 2
    assert "unknown target 'xx'" in capsys.readouterr().err
    assert main(["train", "--params", str(REPO / "params.yaml"), "--set", "model.loss_weights={cc: 2}"]) == 2
    assert "model.loss_weights.cc: 'cc' is not trained" in capsys.readouterr().err
    assert main(["train", "--params", str(REPO / "params.yaml"), "--overrides", "train.lr=-1"]) == 2
    assert "train.lr=-1" in capsys.readouterr().err
    assert main(["train", "--params", str(REPO / "params.yaml")]) == 2
    assert "histoxai prepare" in capsys.readouterr().err  # no data/patches here


@pytest.mark.slow
def test_next_run_is_candidate_until_promoted(repo, capsys):
    more = "train.epochs=1 model.targets=[cc] model.registered_name=histoxai-cc"
    assert main(["train", "--overrides", more]) == 0
    client = MlflowClient(repo.uri)
    assert str(client.get_model_version_by_alias("histoxai-cc", "candidate").version) == "2"
    assert str(client.get_model_version_by_alias("histoxai-cc", "champion").version) == "1"
    assert main(["promote", "--model", "histoxai-cc", "--version", "2"]) == 0
    assert "histoxai-cc@champion -> version 2 (was version 1)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("histoxai-cc", "champion").version) == "2"
    assert main(["promote", "--model", "histoxai-cc", "--version", "9"]) == 2


def _registry_state(uri: str, name: str) -> dict:
    client = MlflowClient(uri)
    return {str(v.version): sorted(v.aliases) for v in client.search_model_versions(f"name='{name}'")}


def _dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.slow
def test_diverged_training_fails_registers_nothing_and_keeps_the_model_dir(repo, capsys):
    before, files = _registry_state(repo.uri, "histoxai-cc"), _dir_bytes(repo.out)
    diverge = ["--set", "train.schedule=none", "--set", "train.lr=1e6", "--set", "train.epochs=2"]
    assert main(["train", *CC, *diverge]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("histoxai train: error: training diverged"), err[-2000:]
    assert "not finite" in lines[0] and "nothing was registered" in lines[0]
    assert _registry_state(repo.uri, "histoxai-cc") == before  # no version, no alias moved
    assert _dir_bytes(repo.out) == files  # the previous model directory, byte for byte
    runs = MlflowClient(repo.uri).search_runs(
        [MlflowClient(repo.uri).get_experiment_by_name(repo.cfg.train.experiment).experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"
    assert not [p for p in repo.out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_mlproject_train_entry_point_uses_the_repo_params(tmp_path):
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("MLproject", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    store = phantom_store(tmp_path / "patches")
    overrides = [
        f"base.patches_dir={store.root}", f"base.models_dir={tmp_path / 'models'}", "data.patch_size_px=32",
        "model.targets=[cc]", "model.registered_name=histoxai-mlproject", "train.epochs=2", "data.split.train_samples=[s1,s2]",
        *TINY_MODEL, *[o for o in TINY_TRAIN if not o.startswith("train.epochs")],
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env["PATH"] = f"{mlflow_bin.parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run(
        [str(mlflow_bin), "run", str(project), "-e", "train", "--env-manager", "local", "-P", "set=" + " ".join(overrides)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    info = __import__("json").loads((tmp_path / "models" / "histoxai-mlproject" / "run.json").read_text())
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(info["run_id"])
    assert run.data.tags.get("mlflow.project.entryPoint") == "train"  # the run `mlflow run` started
    repo_params = load_config(REPO / "params.yaml")
    assert run.data.params["data.phantom.um_per_px"] == str(repo_params.data.phantom.um_per_px)
    assert run.data.params["model.backbone"] == "test_resnet" and run.data.params["train.epochs"] == "2"
