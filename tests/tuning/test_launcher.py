"""Studies end to end with a stand-in trainer: MLflow runs, failures, pruning, champion,
several workers, a killed worker, PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from histoxai.config import dump_yaml
from histoxai.tracking import studies
from tests.tuning.conftest import REPO, tune_config
from tuning.launcher import launch, open_study
from tuning.study import open_storage

pytestmark = pytest.mark.slow


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes exactly one trial (by number) at its first report."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


def _load(cfg):
    return optuna.load_study(study_name=cfg.tune.study_name, storage=open_storage(cfg.tune))


def test_tiny_study_logs_parent_and_nested_runs_records_failed_and_pruned_and_sets_champion(
    tmp_path, mlflow_uri, tiny_space
):
    tiny_space.write_text(
        tiny_space.read_text()
        + "enqueue:\n  - {model.backbone: resnet10t, train.lr: 0.004}\n  - {model.backbone: convnext_atto}\n"
        + "  - {model.backbone: resnet10t, train.lr: 0.008}\n"
    )
    cfg = tune_config(tmp_path, tiny_space, n_trials=4)
    summary = launch(cfg, mlflow_uri, pruner=PruneTrial(2))

    study = _load(cfg)
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED] and len(states) == 4
    assert "Kernel size" in study.trials[1].user_attrs["fail_reason"]
    assert summary["n_trials"] == 4 and summary["failed"] == 1 and summary["pruned"] == 1

    parent = summary["parent_run_id"]
    c = studies.client(mlflow_uri)
    prun = c.get_run(parent)
    assert prun.data.params["sampler"] == "random" and prun.data.params["storage_kind"] == "journal"
    assert prun.data.params["space"] == str(tiny_space) and prun.info.status == "FINISHED"
    runs = {int(r.data.tags["optuna.trial"]): r for r in studies.trial_runs(mlflow_uri, parent)}
    assert sorted(runs) == [0, 1, 2, 3]
    assert (
        runs[1].data.tags["optuna.state"] == "failed"
        and "Kernel size" in runs[1].data.tags["optuna.fail_reason"]
    )
    assert runs[1].info.status == "FAILED"
    assert runs[2].data.tags["optuna.state"] == "pruned"
    assert runs[0].data.tags["optuna.state"] == "complete"
    assert (
        runs[0].data.params["train.lr"] == "0.004"
    )  # every config key is a param: runs compare side by side
    assert set(runs[0].data.params) == set(runs[1].data.params)
    history = c.get_metric_history(runs[0].info.run_id, "objective")
    assert sorted(m.step for m in history) == [0, 0, 1]  # one per epoch plus the final value
    artifacts = {a.path for a in c.list_artifacts(parent, "plots")}
    assert "plots/optimization_history.html" in artifacts and "plots/parallel_coordinate.html" in artifacts

    best = study.best_trial
    champion = c.get_model_version_by_alias("tiny-mdfa", "champion")
    assert champion.run_id == best.user_attrs["mlflow_run_id"]
    assert champion.tags["optuna.trial"] == str(best.number) and champion.tags["targets"] == "md,fa"
    assert (
        json.loads((tmp_path / "optuna" / "tiny" / "summary.json").read_text())["best"]["number"]
        == best.number
    )

    again = launch(cfg, mlflow_uri, finalize_only=True)  # finalizing twice registers nothing new
    assert again["best"]["model_version"] == summary["best"]["model_version"]
    assert len(c.search_model_versions("name = 'tiny-mdfa'")) == 1
    assert len(study.trials) == 4


def test_nan_loss_fails_the_trial_with_its_reason_and_the_study_goes_on(tmp_path, mlflow_uri, tiny_space):
    cfg = tune_config(tmp_path, tiny_space, n_trials=2, trainer="tests.tuning.fakes:nan_train")
    summary = launch(cfg, mlflow_uri)
    assert summary["failed"] == 2 and summary["best"] is None
    assert all("NaN loss" in t.user_attrs["fail_reason"] for t in _load(cfg).trials)


def test_resumed_study_runs_only_the_missing_trials(tmp_path, mlflow_uri, tiny_space):
    cfg = tune_config(tmp_path, tiny_space, n_trials=2)
    first = launch(cfg, mlflow_uri)
    cfg = tune_config(tmp_path, tiny_space, n_trials=3)
    second = launch(cfg, mlflow_uri)
    assert len(_load(cfg).trials) == 3
    assert second["parent_run_id"] == first["parent_run_id"]  # one parent run per study


def _worker_env(tmp_path):
    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "CI": os.environ.get("CI", "")}


def _nested_trial_numbers(uri, cfg):
    parent = open_study(cfg, uri).ctx.parent_run_id
    return sorted(int(r.data.tags["optuna.trial"]) for r in studies.trial_runs(uri, parent))


def test_two_worker_processes_share_the_budget_without_duplicates(
    tmp_path, mlflow_uri, tiny_space, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'src'}{os.pathsep}{REPO}")
    monkeypatch.setenv("FAKE_EPOCH_S", "1")  # long enough for both workers to join
    cfg = tune_config(tmp_path, tiny_space, n_trials=5, workers=2)
    summary = launch(cfg, mlflow_uri)
    trials = _load(cfg).trials
    assert len(trials) == 5 and summary["n_trials"] == 5
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part
    assert _nested_trial_numbers(mlflow_uri, cfg) == [0, 1, 2, 3, 4]


def _wait_for_running_trial(cfg, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = [
                t
                for t in _load(cfg).trials
                if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
            ]
        except KeyError:  # study not created yet
            running = []
        if running:
            return running[0]
        time.sleep(0.2)
    raise TimeoutError("no trial started")


def test_study_killed_mid_trial_resumes_with_the_right_count(tmp_path, mlflow_uri, tiny_space, monkeypatch):
    cfg = tune_config(tmp_path, tiny_space, n_trials=3)
    params = tmp_path / "params.yaml"
    params.write_text(dump_yaml(cfg))
    env = {**_worker_env(tmp_path), "FAKE_EPOCH_S": "30"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "histoxai.cli",
            "tune",
            "--worker",
            "--params",
            str(params),
            "--tracking-uri",
            mlflow_uri,
        ],
        env=env,
        cwd=tmp_path,
    )
    try:
        killed = _wait_for_running_trial(cfg)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    summary = launch(cfg, mlflow_uri)  # same command again: resumes

    trials = _load(cfg).trials
    assert trials[killed.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed.params
    assert (
        summary["n_trials"] == 3 and summary["complete"] + summary["failed"] == 3 and summary["requeued"] == 1
    )
    assert len(trials) == 4  # the killed record plus three that count
    c = studies.client(mlflow_uri)
    assert c.get_run(killed.user_attrs["mlflow_run_id"]).data.tags["optuna.state"] == "killed"


@pytest.mark.postgres
def test_two_workers_on_postgresql_complete_n_trials_without_duplicates(
    tmp_path, mlflow_uri, tiny_space, postgres_url, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'src'}{os.pathsep}{REPO}")
    monkeypatch.setenv("FAKE_EPOCH_S", "1")  # long enough for both workers to join
    cfg = tune_config(
        tmp_path, tiny_space, n_trials=6, workers=2, storage=postgres_url, study_name="pg-study"
    )
    summary = launch(cfg, mlflow_uri)
    study = optuna.load_study(study_name="pg-study", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 6 and len(set(numbers)) == 6 and summary["n_trials"] == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    assert _nested_trial_numbers(mlflow_uri, cfg) == list(range(6))
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 6  # no configuration was run twice


def test_a_run_started_by_mlflow_run_becomes_the_parent_run(tmp_path, mlflow_uri, tiny_space):
    c = studies.client(mlflow_uri)
    started = c.create_run(studies.experiment_id(mlflow_uri, "histoxai")).info.run_id  # as `mlflow run` does
    cfg = tune_config(tmp_path, tiny_space, n_trials=1)
    summary = launch(cfg, mlflow_uri, run_id=started)
    assert summary["parent_run_id"] == started
    run = c.get_run(started)
    assert run.data.tags["optuna.role"] == "study" and run.data.params["study_name"] == "tiny"
    assert len(studies.trial_runs(mlflow_uri, started)) == 1


def test_finalizing_a_study_that_does_not_exist_is_an_error(tmp_path, mlflow_uri, tiny_space):
    with pytest.raises(ValueError, match="no study 'tiny'"):
        launch(tune_config(tmp_path, tiny_space), mlflow_uri, finalize_only=True)
