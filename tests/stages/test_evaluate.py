import json

import pytest

from histoxai import cli, tracking
from histoxai.config import load_config
from histoxai.evaluation.metrics import regression_metrics
from histoxai.evaluation.model_dir import log_results
from histoxai.stages import evaluate as stage
from tests.evaluation.helpers import make_phantom_store, predictions_from_store

MODEL = "models/histoxai-mdfa"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repo-like directory with a phantom store, a params file and a training output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = make_phantom_store(tmp_path / "data" / "patches")
    (tmp_path / "params.yaml").write_text("evaluate:\n  baseline_degree: 2\n")
    model = tmp_path / MODEL
    model.mkdir(parents=True)
    pred = predictions_from_store(store, noise=0.3)
    pred.to_parquet(model / "predictions.parquet", index=False)
    info = {"run_id": "", "targets": ["md", "fa"], "split_scheme": "random", "model_name": "histoxai-mdfa"}
    (model / "run.json").write_text(json.dumps(info))
    return tmp_path, pred


@pytest.mark.slow
def test_stage_writes_metrics_report_and_plots(workdir, capsys):
    root, pred = workdir
    assert cli.main(["evaluate"]) == 0  # default model dir from model.registered_name
    out = root / "reports/evaluate/histoxai-mdfa"
    headline = {t: json.loads((out / "metrics" / f"{t}.json").read_text()) for t in ("md", "fa")}
    test = pred[pred["split"] == "test"]
    assert headline["md"]["r2"] == pytest.approx(
        regression_metrics(test["y_md"], test["yhat_md"])["r2"], abs=5e-4
    )
    assert all(set(v) == {"r2"} for v in headline.values())  # the store's card has no oracle ceiling
    metrics = json.loads((out / "all_metrics.json").read_text())
    assert {"test/r2within_md", "baseline/test/r2_fa", "samplemean/test/r2_md", "ceiling/r2_fa"} <= set(
        metrics
    )
    text = (out / "report.md").read_text()
    assert "CNN vs baselines vs ceilings" in text and "| s3 |" in text and "sample-mean r2" in text
    assert "baseline: degree-2 polynomial" in text
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "maps_s1.png", "maps_s2.png", "maps_s3.png", "scatter_fa.png", "scatter_md.png",
    ]  # fmt: skip
    assert "evaluate: reports/evaluate/histoxai-mdfa" in capsys.readouterr().out
    hidden = [p.name for p in (root / "reports/evaluate").iterdir() if p.name.startswith(".")]
    assert hidden == [".histoxai-mdfa.lock"]  # the writer's lock (a flock), no temporaries


def test_missing_predictions_is_a_clear_error_naming_the_path(workdir, capsys):
    root, _ = workdir
    assert cli.main(["evaluate", "--model-dir", "models/nope"]) == 2
    assert "models/nope/predictions.parquet does not exist" in capsys.readouterr().err
    assert not (root / "reports").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not parquet", "is not a readable Parquet file"),
        ("columns", r"lacks columns \['split'\]"),
        ("targets", r"lacks y_<t>/yhat_<t> columns for targets \['fa'\]"),
    ],
)
def test_bad_predictions_file_is_a_clear_error_naming_the_path(workdir, content, message):
    root, pred = workdir
    path = root / MODEL / "predictions.parquet"
    if content == "columns":
        pred.drop(columns="split").to_parquet(path)
    elif content == "targets":
        pred.drop(columns="yhat_fa").to_parquet(path)
    else:
        path.write_bytes(content)
    cfg = load_config("params.yaml", ["evaluate.baseline=false"])
    with pytest.raises(ValueError, match=message) as err:
        stage.run(cfg)
    assert str(path.relative_to(root)) in str(err.value)


def test_predictions_from_another_store_are_rejected(workdir):
    root, pred = workdir
    pred.assign(row=pred["row"] + 1).to_parquet(root / MODEL / "predictions.parquet")
    with pytest.raises(ValueError, match="does not match store"):
        stage.run(load_config("params.yaml", ["evaluate.baseline=false"]))


@pytest.mark.slow
def test_results_are_logged_to_the_run_in_run_json(workdir, monkeypatch):
    root, _ = workdir
    info = json.loads((root / MODEL / "run.json").read_text())
    (root / MODEL / "run.json").write_text(
        json.dumps({**info, "run_id": "abc", "tracking_uri": "sqlite:///x.db"})
    )
    (root / "x.db").touch()
    calls = []
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "log_report", lambda *a: calls.append(a))
    stage.run(load_config("params.yaml", ["evaluate.baseline=false"]))
    [(run_id, uri, metrics, report_dir, artifact_path)] = calls
    assert run_id == "abc" and uri == "sqlite:///x.db" and "test/r2_md" in metrics
    assert artifact_path == "evaluate" and (report_dir / "report.md").is_file()


def test_nothing_is_logged_without_a_run_id(workdir, monkeypatch):
    def fail(*a):
        raise AssertionError("must not log")

    monkeypatch.setattr(tracking, "log_report", fail)
    assert log_results({"run_id": ""}, workdir[0], {"test/r2_md": 1.0}) is None


@pytest.mark.slow
def test_metrics_and_report_land_in_a_real_mlflow_run(workdir):
    mlflow = pytest.importorskip("mlflow")
    root, _ = workdir
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("t", artifact_location=(root / "mlruns").as_uri()))
    info = json.loads((root / MODEL / "run.json").read_text())
    (root / MODEL / "run.json").write_text(
        json.dumps({**info, "run_id": run.info.run_id, "tracking_uri": uri})
    )
    stage.run(load_config("params.yaml", ["evaluate.baseline=false"]))
    logged = client.get_run(run.info.run_id).data.metrics
    expected = json.loads((root / "reports/evaluate/histoxai-mdfa/all_metrics.json").read_text())
    assert {k: logged[k] for k in expected} == pytest.approx(expected)
    assert "sample/s3/out/r2_md" in logged and "test/ev_md" in logged  # MLflow gets every metric
    names = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/report.md", "evaluate/all_metrics.json", "evaluate/plots"} <= names


def _record(root, **facts):
    path = root / MODEL / "run.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "run_id": "r-of-another-model", **facts}))


def test_a_model_dir_mixing_two_runs_is_refused_before_logging(workdir, capsys):
    root, _ = workdir
    _record(root, predictions_sha256="0" * 64)  # run.json of one run, predictions of another
    assert cli.main(["evaluate"]) == 2
    err = capsys.readouterr().err
    assert "predictions.parquet is not the predictions file of" in err and "run.json" in err
    assert not (root / "reports").exists() and not (root / "mlflow.db").exists()  # nothing logged


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"patch_size_px": 64}, "was trained on 64 px patches but the patch store"),
        ({"index_sha256": "f" * 64}, "was trained on another patch store than"),
    ],
)
def test_a_model_of_another_store_is_refused(workdir, capsys, facts, message):
    root, _ = workdir
    _record(root, **facts)
    assert cli.main(["evaluate"]) == 2
    assert message in capsys.readouterr().err
    assert not (root / "reports").exists()


def test_the_report_dir_is_written_into_not_replaced(workdir):
    root, _ = workdir
    out = root / "reports/evaluate/histoxai-mdfa"
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("/report.md\n")
    (out / "metrics.json").write_text("{}")  # the headline file of earlier versions: removed
    assert cli.main(["evaluate", "--set", "evaluate.baseline=false"]) == 0
    assert (out / ".gitignore").read_text() == "/report.md\n" and (out / "metrics" / "md.json").is_file()
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_two_seeds_train_two_models_register_one_and_the_report_gives_their_spread(tmp_path, monkeypatch):
    import pandas as pd
    import yaml
    from mlflow import MlflowClient

    from histoxai.config import to_dict
    from tests.training.conftest import phantom_store, tiny_config

    store = phantom_store(tmp_path / "data" / "patches")
    cfg = tiny_config(store, tmp_path, "train.epochs=2", "base.seeds=[3, 5]", "model.targets=[md]")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert cli.main(["train"]) == 0
    model = tmp_path / "models" / cfg.model.registered_name
    info = json.loads((model / "run.json").read_text())
    assert info["seeds"] == [3, 5] and (model / "seeds/5/model.pt").is_file()
    first, second = (
        pd.read_parquet(p) for p in (model / "predictions.parquet", model / "seeds/5/predictions.parquet")
    )
    assert not first["yhat_md"].equals(second["yhat_md"])  # another seed, another model
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert len(MlflowClient(uri, registry_uri=uri).search_model_versions()) == 1  # only the first seed
    assert cli.main(["evaluate"]) == 0
    out = tmp_path / "reports/evaluate" / cfg.model.registered_name
    metrics = json.loads((out / "all_metrics.json").read_text())
    each = [regression_metrics(f.query("split == 'test'")["y_md"], f.query("split == 'test'")["yhat_md"])["r2"]
            for f in (first, second)]  # fmt: skip
    assert metrics["test/r2_md"] == pytest.approx(sum(each) / 2, abs=1e-4)
    assert metrics["test/r2sd_md"] == pytest.approx(abs(each[0] - each[1]) / 2**0.5, abs=1e-4)
    assert "mean over seeds [3, 5]" in (out / "report.md").read_text()
