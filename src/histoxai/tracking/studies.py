"""MLflow runs of an Optuna study: one parent run per study, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids (no active
run, no fluent API), so worker processes on any machine log into the same parent:
a trial run is created with the tag ``mlflow.parentRunId``. Tags that tie runs to the
study: ``optuna.study`` (both), ``optuna.role`` (``study`` / ``trial``),
``optuna.trial`` (trial number) and ``optuna.state`` (complete, pruned, failed, killed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunTag

from histoxai.tracking.runs import client, experiment_id, global_tracking_uri, log_metrics, log_params

STUDY_TAG = "optuna.study"
ROLE_TAG = "optuna.role"
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.state"
REASON_TAG = "optuna.fail_reason"
_MLFLOW_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


def find_study_run(tracking_uri: str, experiment: str, study_name: str) -> str | None:
    """The parent run of ``study_name`` in ``experiment``, or None."""
    c = client(tracking_uri)
    runs = c.search_runs(
        [experiment_id(tracking_uri, experiment)],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'study'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_study_run(
    tracking_uri: str,
    experiment: str,
    study_name: str,
    params: Mapping[str, Any],
    files: Iterable[Path] = (),
    run_id: str | None = None,
) -> str:
    """Create the parent run of a study (or reopen an existing one) and return its id.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name.
        study_name: Optuna study name (also the run name).
        params: study settings (space file, sampler, pruner, storage kind, ...).
        files: files logged as artifacts under ``study/`` (e.g. the space YAML).
        run_id: the parent run recorded in the study, reopened if it still exists, or a
            fresh run to adopt (e.g. the one ``mlflow run`` started); else the study's
            parent run is looked up by tag, or created.
    """
    c = client(tracking_uri)
    tags = {STUDY_TAG: study_name, ROLE_TAG: "study"}
    adopt = False
    if run_id is not None:
        try:
            adopt = c.get_run(run_id).data.tags.get(ROLE_TAG) != "study"
        except Exception:  # the tracking store was reset: start over
            run_id = None
    run_id = run_id or find_study_run(tracking_uri, experiment, study_name)
    if run_id is None or adopt:
        if run_id is None:
            exp_id = experiment_id(tracking_uri, experiment)
            run_id = c.create_run(exp_id, tags=tags, run_name=study_name).info.run_id
        else:
            c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        log_params(run_id, params, tracking_uri)
    else:
        c.update_run(run_id, status="RUNNING")
        c.set_tag(run_id, "optuna.resumed", time.strftime("%Y-%m-%dT%H:%M:%S"))
    for path in files:
        c.log_artifact(run_id, str(path), "study")
    return run_id


def start_trial_run(
    tracking_uri: str,
    parent_run_id: str,
    study_name: str,
    trial_number: int,
    params: Mapping[str, Any],
    sampled: Iterable[str] = (),
) -> str:
    """Create the nested run of one trial under ``parent_run_id`` and log its params.

    ``params`` should be the full flat config (so every trial run has the same columns in
    the MLflow UI); ``sampled`` names the keys the sampler chose (tag ``optuna.sampled``).
    """
    c = client(tracking_uri)
    parent = c.get_run(parent_run_id)
    tags = {
        "mlflow.parentRunId": parent_run_id,
        STUDY_TAG: study_name,
        ROLE_TAG: "trial",
        TRIAL_TAG: str(trial_number),
        STATE_TAG: "running",
        "optuna.sampled": ",".join(sampled),
    }
    run = c.create_run(
        parent.info.experiment_id, tags=tags, run_name=f"{study_name}-trial-{trial_number:03d}"
    )
    log_params(run.info.run_id, params, tracking_uri)
    return run.info.run_id


def log_epoch(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log one epoch's metrics (non-finite values are skipped) at ``step``."""
    log_metrics(run_id, metrics, tracking_uri, step)


def end_trial_run(
    tracking_uri: str,
    run_id: str,
    state: str,
    metrics: Mapping[str, float] | None = None,
    reason: str | None = None,
) -> None:
    """Record the trial's final ``state`` (complete, pruned, failed, killed) and close the run."""
    if state not in _MLFLOW_STATUS:
        raise ValueError(f"trial state {state!r}: expected one of {sorted(_MLFLOW_STATUS)}")
    c = client(tracking_uri)
    tags = [RunTag(STATE_TAG, state)]
    if reason:
        tags.append(RunTag(REASON_TAG, reason[:5000]))
    c.log_batch(run_id, tags=tags)
    if metrics:
        log_epoch(tracking_uri, run_id, metrics, step=0)
    c.set_terminated(run_id, status=_MLFLOW_STATUS[state])


def finish_study_run(
    tracking_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    files: Iterable[Path] = (),
    artifact_path: str = "plots",
    status: str = "FINISHED",
) -> None:
    """Log the study summary (metrics, tags, plot files) to the parent run and close it."""
    c = client(tracking_uri)
    log_epoch(tracking_uri, run_id, metrics, step=0)
    c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    for path in files:
        c.log_artifact(run_id, str(path), artifact_path)
    if status != "RUNNING":  # trials still running elsewhere: leave the run open
        c.set_terminated(run_id, status=status)


def trial_runs(tracking_uri: str, parent_run_id: str) -> list[Any]:
    """The nested trial runs of a study's parent run (MLflow ``Run`` objects)."""
    c = client(tracking_uri)
    parent = c.get_run(parent_run_id)
    return list(
        c.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=50000,
        )
    )


MODEL_ID_TAG = "optuna.model_id"
LABEL_PREFIX = "histoxai."  # run tags copied to the registered version without the prefix


def log_trial_model(
    tracking_uri: str,
    run_id: str,
    model: Any,
    input_example: Any,
    tags: Mapping[str, str],
    best_epoch: int | None = None,
) -> str:
    """Log a trial's regressor to its run like the training stage does, but unregistered.

    Args:
        tracking_uri: MLflow tracking URI.
        run_id: the trial's nested run.
        model: the trained :class:`~histoxai.models.Regressor`.
        input_example: (n, 3, H, W) float32 RGB in [0, 1].
        tags: facts the registry version will carry (``targets``, ``data_hash``,
            ``split_scheme``); stored as run tags ``histoxai.<key>``.
        best_epoch: the epoch whose weights were kept (metric ``best_epoch``).

    Returns:
        The logged model's URI (``models:/m-...``).
    """
    import torch

    from histoxai.tracking.registry import _log_model, _quiet

    model = model.cpu().eval()
    with torch.no_grad():
        output = model(torch.from_numpy(input_example)).numpy()
    with (
        global_tracking_uri(tracking_uri),
        mlflow.start_run(run_id=run_id),
        _quiet("mlflow.pytorch"),
    ):  # its pickle warning, as in training
        info = _log_model(model, input_example, output, tags)
    c = client(tracking_uri)
    run_tags = [RunTag(f"{LABEL_PREFIX}{k}", str(v)) for k, v in tags.items()]
    c.log_batch(run_id, tags=[*run_tags, RunTag(MODEL_ID_TAG, info.model_id)])
    if best_epoch is not None:
        log_epoch(tracking_uri, run_id, {"best_epoch": best_epoch}, step=best_epoch)
    return info.model_uri


def register_trial_model(
    tracking_uri: str,
    model_name: str,
    run_id: str,
    study_name: str,
    trial_number: int,
    alias: str = "champion",
) -> tuple[str, bool]:
    """Register the model logged by a trial run and point ``alias`` at it.

    The version carries the run's ``histoxai.*`` tags (targets, data hash, split scheme,
    as a version from the training stage does) plus ``optuna.study`` / ``optuna.trial``.
    Idempotent: a version tagged with the same study and trial is reused, so running the
    finalisation again registers nothing new.

    Returns:
        The version and whether it was newly created.

    Raises:
        ValueError: the run has no logged model.
    """
    from histoxai.tracking.registry import register_logged_model

    c = client(tracking_uri)
    run = c.get_run(run_id)
    model_id = run.data.tags.get(MODEL_ID_TAG)
    if not model_id:
        raise ValueError(f"trial run {run_id} (trial {trial_number}) has no logged model to register")
    existing = c.search_model_versions(
        f"name = '{model_name}' and tags.`{STUDY_TAG}` = '{study_name}' and tags.`{TRIAL_TAG}` = '{trial_number}'"
    )
    created = not existing
    if existing:
        version = str(existing[0].version)
    else:
        tags = {k[len(LABEL_PREFIX) :]: v for k, v in run.data.tags.items() if k.startswith(LABEL_PREFIX)}
        tags.update({STUDY_TAG: study_name, TRIAL_TAG: str(trial_number)})
        # MLflow's SQL registry resolves the logged model through the *global* tracking URI.
        with global_tracking_uri(tracking_uri):
            version = register_logged_model(c, model_name, model_id, run_id, tags)
    c.set_registered_model_alias(model_name, alias, version)
    return version, created
