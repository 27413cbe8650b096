"""SIGKILL `histoxai tune` (real trainer, tiny project) at each write window, then run the
same command again: the study resumes to its budget, every killed trial is re-run, each
trial's model is registered at most once, the champion alias only ever points at the
best trial's version, and after the last run no MLflow run or Optuna trial is left RUNNING.

What the code guarantees between a kill and the next run: the champion alias is either
the previous one or the new best version (never a version without its tags); a version
registered before the kill but not yet aliased is reused, not registered twice.
"""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from histoxai.config import load_config
from histoxai.tuning.study import open_storage
from tests.ops.conftest import histoxai, killed, write_params

pytestmark = pytest.mark.slow
NAME = "histoxai-cc"
SPACE = "params:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"

WINDOWS = [  # (window, function wrapped, before/after), in the order a study meets them
    ("a trial training (first epoch logged)", "histoxai.tracking.studies:log_epoch", "after"),
    ("a trial's model logged, the trial not closed", "histoxai.tracking.studies:log_trial_model", "after"),
    ("best version registered, champion not set",
     "mlflow.tracking.client:MlflowClient.set_registered_model_alias", "before"),
    ("champion set, study run not finished", "histoxai.tracking.studies:finish_study_run", "before"),
]  # fmt: skip


def _versions(client) -> list[tuple[str, str, list[str]]]:
    """(version, optuna trial tag, aliases) of every registered version."""
    out = []
    for v in client.search_model_versions(f"name='{NAME}'"):
        full = client.get_model_version(NAME, v.version)  # search omits aliases
        out.append((str(full.version), full.tags.get("optuna.trial", ""), sorted(full.aliases)))
    return sorted(out, key=lambda v: int(v[0]))


def test_a_killed_study_resumes_and_registers_its_best_trial_once(tmp_path):
    root = tmp_path
    write_params(
        root,
        tune={"space": "space.yaml", "dir": "optuna", "study_name": "tiny", "n_trials": 2,
              "sampler": "random", "pruner": "none", "workers": 1},
        train={"device": "cpu"},
    )  # fmt: skip
    (root / "space.yaml").write_text(SPACE)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert histoxai(root, "prepare").returncode == 0
    for window, spec, when in WINDOWS:
        done = histoxai(root, "tune", kill=(spec, when))
        assert killed(done), f"{window}: {done.stderr[-3000:]}"
        trials = [v[1] for v in _versions(client)]
        assert len(trials) == len(set(trials)), f"{window}: a trial registered twice: {_versions(client)}"
    done = histoxai(root, "tune")  # the same command again
    assert done.returncode == 0, done.stderr[-3000:]

    cfg = load_config(root / "params.yaml", ["tune.dir=" + str(root / "optuna")])
    study = optuna.load_study(study_name="tiny", storage=open_storage(cfg.tune))
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    counted = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 2, states  # the budget, whatever was killed
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 2  # the two trials killed
    best = max(counted, key=lambda t: t.value)
    versions = _versions(client)
    assert [(trial, aliases) for _, trial, aliases in versions] == [(str(best.number), ["champion"])]
    exp = client.get_experiment_by_name("histoxai")
    running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert [r.info.run_name for r in running] == []
    killed_runs = client.search_runs([exp.experiment_id], "attributes.status = 'KILLED'")
    assert len(killed_runs) == 2  # the killed trials' runs, closed by the next run
