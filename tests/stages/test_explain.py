"""``histoxai explain``: registry model in, saliency store out, run recorded in MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from histoxai import cli, tracking
from histoxai.config import load_config
from histoxai.data.store import PatchStore
from histoxai.explain import job as stage
from histoxai.explain.runner import to_input
from histoxai.explain.store import SaliencyStore
from tests.explain.conftest import random_blocks, tiny_regressor

METHODS = "explain.methods=[gradcam, {name: sg, method: smoothgrad, params: {n: 2}}]"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    from functools import partial

    from histoxai.config import SplitConfig
    from histoxai.data.splits import assign_splits
    from histoxai.data.store import write_store

    write_store(
        tmp_path / "data/patches",
        random_blocks(),
        {"source": "test"},
        partial(assign_splits, cfg=SplitConfig(), seed=0),
    )
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"explain": {"model_uri": "models:/histoxai-mdfa@champion"}})
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fake_registry(monkeypatch, version: int = 7):
    model = tiny_regressor(("md", "fa"))
    info = {
        "name": "histoxai-mdfa",
        "version": str(version),
        "run_id": "r1",
        "uri": f"models:/histoxai-mdfa/{version}",
    }
    asked = []

    def load(uri, tracking_uri):
        asked.append(uri)
        return model, info

    monkeypatch.setattr(tracking, "load_registered_model", load, raising=False)
    return asked


def test_select_ids_picks_the_split_of_the_scheme(workdir):
    patches = PatchStore(workdir / "data/patches")
    test = stage.select_ids(patches, "test", "random")
    assert set(patches.index.set_index("patch_id").loc[test, "split_random"]) == {"test"}
    assert len(stage.select_ids(patches, "all", "random")) == len(patches)
    few = stage.select_ids(patches, "all", "random", max_patches=5, seed=1)
    assert len(few) == 5 and np.all(np.diff(few) > 0)
    np.testing.assert_array_equal(few, stage.select_ids(patches, "all", "random", max_patches=5, seed=1))


def register(uri: str, model, split_scheme: str = "random") -> None:
    example = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with tracking.start_run(uri, "histoxai", "train") as run:
        tags = {"split_scheme": split_scheme, "data_hash": "h1"}
        version = tracking.register_regressor(run, model, "histoxai-mdfa", example, tags)["model_version"]
        tracking.publish_version(run.client, "histoxai-mdfa", version)


@pytest.mark.slow
def test_explain_writes_the_store_and_records_the_run(workdir, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    register(uri, tiny_regressor(("md", "fa")))
    register(uri, tiny_regressor(("md", "fa"), seed=1))  # version 2 is the candidate, 1 stays champion
    client = mlflow.MlflowClient(uri)

    args = ["explain", "--params", "params.yaml", "--set", METHODS, "--set", "explain.split=all"]
    assert cli.main(args) == 0
    store = SaliencyStore(workdir / "data/saliency/histoxai-mdfa")
    assert store.manifest["model_uri"] == "models:/histoxai-mdfa/1" and store.manifest["model_version"] == "1"
    assert store.manifest["requested_uri"] == "models:/histoxai-mdfa@champion"
    assert store.manifest["data_hash"] == "h1"
    patches = PatchStore(workdir / "data/patches")
    with torch.no_grad():  # the maps are of version 1 (champion), not the newer candidate
        y_hat = tiny_regressor(("md", "fa"))(to_input(patches.images(store.patch_ids), torch.device("cpu")))
    np.testing.assert_allclose(store.meta.query("target == 'fa'")["y_hat"], y_hat[:, 1].numpy(), rtol=1e-5)
    assert sorted(store.manifest["complete"]) == ["fa__gradcam", "fa__sg", "md__gradcam", "md__sg"]
    assert len(store.patch_ids) == 18 and set(store.meta["split"]) == {"train", "val", "test"}

    (run,) = client.search_runs(
        [client.get_experiment_by_name("histoxai").experiment_id], "tags.`histoxai.stage` = 'explain'"
    )
    assert run.data.tags["histoxai.model_version"] == "1"
    assert run.data.params["explain.model_version"] == "1"
    assert json.loads(run.data.params["explain.variants"])["sg"]["method"] == "smoothgrad"
    assert run.data.metrics["explain/n_pairs"] == 4 and "explain/maps_per_s_md__sg" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"manifest.json"}

    # Started again, the complete store is kept as is.
    before = (workdir / "data/saliency/histoxai-mdfa/maps/md__sg.npy").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert (workdir / "data/saliency/histoxai-mdfa/maps/md__sg.npy").stat().st_mtime_ns == before


def test_bad_method_config_is_a_clear_error(workdir, monkeypatch, capsys):
    fake_registry(monkeypatch)
    cfg = load_config(
        "params.yaml", ["explain.methods=[{name: sg, method: smoothgrad, params: {sigm: 0.3}}]"]
    )
    with pytest.raises(ValueError, match=r"explain.methods\[0\] \('sg'\): unknown parameter 'sigm'"):
        stage.explain_model(cfg, *tracking.load_registered_model("models:/x/1", ""))
    cfg = load_config("params.yaml", ["explain.split=out"])
    with pytest.raises(ValueError, match="explain.split='out': no patches"):
        stage.explain_model(cfg, *tracking.load_registered_model("models:/x/1", ""))


def write_model_dir(root, model, run_id="r9", json_run_id=None):
    from histoxai.config import ModelConfig
    from histoxai.models.checkpoint import save_checkpoint

    cfg = ModelConfig(
        backbone="resnet10t", targets=("md", "fa"), hidden_width=16, feature_width=8, dropout=0.0
    )
    save_checkpoint(root / "model.pt", model, cfg, {"run_id": run_id, "split_scheme": "random"})
    run = {"run_id": json_run_id or run_id, "model_name": "histoxai-mdfa", "model_version": "4",
           "model_uri": "models:/histoxai-mdfa/4", "split_scheme": "random", "data_hash": "h4"}  # fmt: skip
    (root / "run.json").write_text(json.dumps(run))


def test_explain_explains_the_checkpoint_of_the_model_dir_not_the_registry(workdir, monkeypatch):
    asked = fake_registry(monkeypatch)  # the registry's model would differ: seed 0
    model = tiny_regressor(("md", "fa"), seed=3)
    (workdir / "models/histoxai-mdfa").mkdir(parents=True)
    write_model_dir(workdir / "models/histoxai-mdfa", model)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    cfg = load_config("params.yaml", [METHODS, "explain.split=all", "explain.model_dir=models/histoxai-mdfa"])
    store = stage.explain_model(cfg, *stage.load_explained_model(cfg.explain, ""))
    assert asked == []
    assert store.manifest["model_version"] == "4" and store.manifest["data_hash"] == "h4"
    assert store.manifest["model_source"].startswith("model_dir: models/histoxai-mdfa/model.pt")
    patches = PatchStore(workdir / "data/patches")
    with torch.no_grad():
        y_hat = model(to_input(patches.images(store.patch_ids), torch.device("cpu")))
    np.testing.assert_allclose(store.meta.query("target == 'md'")["y_hat"], y_hat[:, 0].numpy(), rtol=1e-5)


def test_a_model_dir_mixing_two_runs_is_refused(workdir):
    (workdir / "m").mkdir()
    write_model_dir(workdir / "m", tiny_regressor(("md", "fa")), run_id="r1", json_run_id="r2")
    cfg = load_config("params.yaml", ["explain.model_dir=m"])
    with pytest.raises(ValueError, match=r"m: model.pt is from run r1 but run.json from run r2"):
        stage.load_explained_model(cfg.explain, "")
    with pytest.raises(FileNotFoundError, match=r"explain.model_dir='nowhere'"):
        stage.load_explained_model(load_config("params.yaml", ["explain.model_dir=nowhere"]).explain, "")


def test_a_study_champion_wins_and_the_candidate_stands_in_when_there_is_none(workdir, monkeypatch):
    # pipelines/tune/dvc.yaml passes the study's summary.json and the train stage's model_dir
    asked = fake_registry(monkeypatch, version=9)
    (workdir / "models/histoxai-mdfa").mkdir(parents=True)
    write_model_dir(workdir / "models/histoxai-mdfa", tiny_regressor(("md", "fa"), seed=3))
    summary = workdir / "summary.json"
    best = {"number": 1, "model_uri": "models:/histoxai-mdfa/9", "model_version": "9"}
    summary.write_text(json.dumps({"study_name": "s", "best": best}))
    sets = ["explain.model_dir=models/histoxai-mdfa", "explain.study=summary.json"]
    _, info = stage.load_explained_model(load_config("params.yaml", sets).explain, "")
    assert asked == ["models:/histoxai-mdfa/9"] and info["version"] == "9"
    assert info["source"].startswith("champion of study s (best trial 1, summary.json): registry:")

    summary.write_text(json.dumps({"study_name": "s", "best": None}))
    _, info = stage.load_explained_model(load_config("params.yaml", sets).explain, "")
    assert asked == ["models:/histoxai-mdfa/9"] and info["version"] == "4"  # no second registry load
    assert info["source"].endswith("(the checkpoint the train stage wrote; study s has no complete trial)")
    with pytest.raises(ValueError, match=r"explain.study='summary.json': study s has no complete trial, and"):
        stage.load_explained_model(load_config("params.yaml", sets[1:]).explain, "")
    with pytest.raises(FileNotFoundError, match=r"explain.study='nowhere.json': nowhere.json is missing"):
        stage.load_explained_model(load_config("params.yaml", ["explain.study=nowhere.json"]).explain, "")


def test_each_further_training_seed_is_explained_into_its_sub_store(workdir, monkeypatch):
    from histoxai.config import ModelConfig
    from histoxai.models.checkpoint import save_checkpoint

    root = workdir / "models/histoxai-mdfa"
    root.mkdir(parents=True)
    write_model_dir(root, tiny_regressor(("md", "fa"), seed=3))
    run = json.loads((root / "run.json").read_text())
    (root / "run.json").write_text(json.dumps({**run, "seeds": [0, 1]}))
    cfg = load_config(
        "params.yaml", [METHODS, "explain.max_patches=6", "explain.model_dir=models/histoxai-mdfa"]
    )
    model, info = stage.load_explained_model(cfg.explain, "")
    main = stage.explain_model(cfg, model, info)
    with pytest.raises(
        FileNotFoundError, match=r"seeds/1/model.pt is missing but run.json lists seeds \[0, 1\]"
    ):
        stage.explain_seeds(cfg, info, main)
    other = tiny_regressor(("md", "fa"), seed=4)
    mcfg = ModelConfig(backbone="resnet10t", targets=("md", "fa"), hidden_width=16, feature_width=8)
    save_checkpoint(root / "seeds/1/model.pt", other, mcfg, {"seed": "1"})
    (sub,) = stage.explain_seeds(cfg, info, main)
    assert sub.root == main.root / "seeds/1" and "seed" not in main.manifest
    np.testing.assert_array_equal(sub.patch_ids, main.patch_ids)
    assert sub.variants == main.variants and sub.manifest["complete"] == main.manifest["complete"]
    assert (sub.manifest["seed"], sub.manifest["seeds"]) == (1, [0, 1])
    with torch.no_grad():
        y_hat = other(
            to_input(PatchStore(workdir / "data/patches").images(sub.patch_ids), torch.device("cpu"))
        )
    np.testing.assert_allclose(sub.meta.query("target == 'md'")["y_hat"], y_hat[:, 0].numpy(), rtol=1e-5)
