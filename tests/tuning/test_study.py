"""Study plumbing: registries, storage kinds, worker tokens, dead-worker recovery, budget."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from histoxai.config import Config, ConfigError, apply_overrides
from histoxai.tuning.study import (
    WORKER_ATTR,
    BudgetLock,
    RetryStale,
    counted_trials,
    make_pruner,
    make_sampler,
    open_storage,
    recover_dead_workers,
    redact,
    run_worker,
    storage_kind,
    storage_url,
    worker_alive,
    worker_token,
)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
    ],
)
def test_samplers_are_selectable_by_name(name, cls):
    assert isinstance(make_sampler(name, seed=0), cls)


def test_tpe_sampler_is_seeded():
    def draws():
        study = optuna.create_study(sampler=make_sampler("tpe", 7))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert draws() == draws()


@pytest.mark.parametrize(
    "name, cls",
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruners_are_selectable_by_name(name, cls):
    tune = apply_overrides(Config(), {"tune.pruner": name}).tune
    assert isinstance(make_pruner(tune, max_epochs=4), cls)


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="tune.sampler"):
        make_sampler("grid", 0)


def test_storage_kinds_and_default_journal():
    tune = apply_overrides(Config(), {"tune.dir": "opt", "tune.study_name": "s1"}).tune
    assert storage_url(tune) == "opt/s1.journal" and storage_kind(storage_url(tune)) == "journal"
    assert storage_kind("sqlite:///x.db") == "sqlite"
    assert storage_kind("postgresql+psycopg2://u:p@h/db") == "postgresql"
    with pytest.raises(ConfigError, match="tune.storage"):
        storage_kind("optuna.db")


def test_redact_hides_the_password_only():
    assert redact("postgresql://bob:secret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_worker_tokens_tell_live_dead_and_foreign_workers_apart():
    assert worker_alive(worker_token()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    token = worker_token(proc.pid)
    proc.wait()
    assert worker_alive(token) is False
    assert worker_alive("some-other-host:1:1") is None


def _journal_study(tmp_path, n_trials=3):
    tune = apply_overrides(
        Config(), {"tune.dir": str(tmp_path), "tune.study_name": "s", "tune.n_trials": n_trials}
    ).tune
    study = optuna.create_study(storage=open_storage(tune), study_name="s", direction="maximize")
    return tune, study


def test_trial_of_a_dead_worker_is_failed_and_its_params_requeued(tmp_path):
    tune, study = _journal_study(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = worker_token(proc.pid)
    proc.wait()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER_ATTR, dead)
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, worker_token())

    assert recover_dead_workers(study, RetryStale(max_retry=2)) == [trial.number]

    states = {t.number: t.state for t in study.trials}
    assert states[trial.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    retry = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(retry) == 1 and retry[0].params == {"x": trial.params["x"]}
    # the failed original no longer uses the budget; its retry does
    assert {t.number for t in counted_trials(study)} == {alive.number, retry[0].number}
    assert recover_dead_workers(study, RetryStale(max_retry=2)) == []


def test_worker_loop_stops_at_the_budget_and_runs_queued_trials_first(tmp_path):
    tune, study = _journal_study(tmp_path, n_trials=3)
    study.enqueue_trial({"x": 0.25})
    seen = []

    def objective(trial):
        seen.append(trial.suggest_float("x", 0, 1))
        if len(seen) == 2:
            raise RuntimeError("boom")  # a failing trial does not stop the worker
        return seen[-1]

    assert run_worker(study, objective, 3, BudgetLock(tune), RetryStale(1)) == 3
    assert seen[0] == 0.25 and len(study.trials) == 3
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    assert run_worker(study, objective, 3, BudgetLock(tune), RetryStale(1)) == 0  # resume: nothing left


def test_rdb_heartbeat_fails_and_requeues_a_trial_whose_worker_went_silent(tmp_path):
    values = {"tune.storage": f"sqlite:///{tmp_path / 'o.db'}", "tune.study_name": "s", "tune.heartbeat_s": 1}
    tune = apply_overrides(Config(), {**values, "tune.grace_s": 1}).tune
    stale_seen = []
    storage = open_storage(tune, on_stale=lambda t: stale_seen.append(t.number))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    silent = study.ask()
    silent.suggest_float("x", 0, 1)
    silent.set_user_attr(WORKER_ATTR, "a-machine-elsewhere:1:1")  # not judged by pid
    study_id = storage.get_study_id_from_name("s")  # public storage API, no Optuna privates
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, silent.number))
    time.sleep(2.5)

    run_worker(study, lambda t: t.suggest_float("x", 0, 1), 2, BudgetLock(tune), RetryStale(1))

    trials = study.get_trials()
    assert trials[silent.number].state == TrialState.FAIL and stale_seen == [silent.number]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == silent.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == silent.params
    assert len(counted_trials(study)) == 2


def test_tuning_uses_no_optuna_privates():
    import re

    for path in (Path(__file__).resolve().parents[2] / "tuning").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\._(storage|trial_id|study_id)\b", text), path
