"""The tracking seam: one URI resolution that fails fast, one param format, one report logger."""

from __future__ import annotations

import json
import os

import pytest
from mlflow import MlflowClient

from histoxai import cli
from histoxai.errors import TrackingError, UserError
from histoxai.tracking import experiment_id, log_report, param_text, resolve_tracking_uri, start_run, studies


def test_precedence_flag_env_recorded_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kw = {"repo_root": tmp_path, "check": False}
    assert resolve_tracking_uri(**kw) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri(recorded="sqlite:///rec.db", **kw) == "sqlite:///rec.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(recorded="sqlite:///rec.db", **kw) == "sqlite:///env.db"
    assert resolve_tracking_uri("sqlite:///flag.db", recorded="sqlite:///rec.db", **kw) == "sqlite:///flag.db"


@pytest.mark.timeout(60)  # a hang guard, not a speed claim: MLflow's own client retries ~4 min
def test_dead_server_is_one_clear_error():
    with pytest.raises(TrackingError, match=r"http://127.0.0.1:1 is unreachable"):
        resolve_tracking_uri("http://127.0.0.1:1")


def test_mistyped_sqlite_path_creates_nothing(tmp_path):
    missing = tmp_path / "nonexistent" / "deeper"
    with pytest.raises(TrackingError, match="does not exist"):
        resolve_tracking_uri(f"sqlite:///{missing}/mlflow.db")
    assert not (tmp_path / "nonexistent").exists()


def test_a_reader_needs_an_existing_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri(uri) == uri  # a writer may start a new store
    with pytest.raises(TrackingError, match="run `histoxai train` first"):
        resolve_tracking_uri(uri, must_exist=True)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "uri, match",
    [
        ("htp://127.0.0.1:5000", "unknown scheme 'htp'"),
        (
            "postgresql+psycopg2://u:secret@127.0.0.1:1/db",
            r"postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/db is unreachable",
        ),
        ("mysql://u@127.0.0.1:1/db", "no database driver|unreachable"),
    ],
)
def test_unknown_or_unreachable_stores_are_named(uri, match):
    with pytest.raises(TrackingError, match=match) as err:
        resolve_tracking_uri(uri)
    assert "secret" not in str(err.value)


def test_the_cli_reports_a_dead_server_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    for command in (["train"], ["promote", "--model", "m", "--version", "1"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "http://127.0.0.1:1 is unreachable" in err
    assert issubclass(TrackingError, UserError)


@pytest.mark.slow
def test_training_and_trial_runs_format_params_alike(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = {"model.targets": ["md", "fa"], "train.lr": 0.001, "data.split.fractions": (0.6, 0.2, 0.2)}
    with start_run(uri, "exp", run_name="train") as run:
        run.log_params(params)
    parent = studies.start_study_run(uri, "exp", "s", {"tune.sampler": "tpe"})
    trial = studies.start_trial_run(uri, parent, "s", 0, params)
    c = MlflowClient(uri)
    assert c.get_run(run.run_id).data.params == c.get_run(trial).data.params
    assert c.get_run(trial).data.params["model.targets"] == "[md, fa]" == param_text(("md", "fa"))
    assert experiment_id(uri, "exp") == c.get_run(trial).info.experiment_id  # found, not created again


@pytest.mark.parametrize("caller", [None, "sqlite:///elsewhere.db"])
def test_a_run_leaves_the_process_wide_tracking_uri_as_it_found_it(tmp_path, monkeypatch, caller):
    """Inside the run MLflow's fluent API writes to the run's store; afterwards the
    caller's $MLFLOW_TRACKING_URI (or its absence) is back, so a later command in the
    same process (a test, a notebook) is not silently pointed at this store."""
    import mlflow

    if caller is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", caller)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with start_run(uri, "exp") as run:
        assert mlflow.get_tracking_uri() == uri and mlflow.active_run().info.run_id == run.run_id
    assert os.environ.get("MLFLOW_TRACKING_URI") == caller
    assert mlflow.get_tracking_uri() != uri and mlflow.active_run() is None
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_log_report_puts_finite_metrics_and_files_on_the_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with start_run(uri, "exp") as run:
        pass
    report = tmp_path / "report"
    (report / "plots").mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps({"a": 1}))
    (report / "report.md").write_text("# r\n")
    (report / "plots" / "scatter.png").write_bytes(b"\x89PNG")
    (report / "ignored.bin").write_bytes(b"x")
    log_report(run.run_id, uri, {"test/r2_md": 0.5, "bad": float("nan"), "worse": float("inf")}, report, "ev")
    c = MlflowClient(uri)
    assert c.get_run(run.run_id).data.metrics == {"test/r2_md": 0.5}
    files = {f.path for f in c.list_artifacts(run.run_id, "ev")}
    assert files == {"ev/metrics.json", "ev/report.md", "ev/plots"}
    assert [f.path for f in c.list_artifacts(run.run_id, "ev/plots")] == ["ev/plots/scatter.png"]


@pytest.mark.slow
def test_logging_to_a_run_the_store_lacks_names_the_run_the_store_and_the_kept_report(tmp_path, monkeypatch):
    from histoxai.xai_eval.inputs import log_results

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with start_run(uri, "exp"):
        pass  # the store exists, the model's run is in another one
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# r\n")
    missing = "0123456789abcdef0123456789abcdef"
    with pytest.raises(
        TrackingError, match=rf"run {missing} is not in the tracking store {uri}.*{report} is written"
    ):
        log_report(missing, uri, {"test/r2_md": 0.5}, report, "ev")
    info = {"run_id": missing, "tracking_uri": uri}
    with pytest.raises(
        TrackingError, match=rf"run {missing} is not in the tracking store.*MLFLOW_TRACKING_URI"
    ):
        log_results(info, report, {"mass_accuracy": 0.5}, [report / "report.md"])
    assert (report / "report.md").read_text() == "# r\n"


def test_checking_a_uri_loads_no_mlflow_or_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom histoxai.tracking import resolve_tracking_uri\n"
        "try:\n    resolve_tracking_uri('http://127.0.0.1:1')\nexcept Exception:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'torch', 'timm'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
