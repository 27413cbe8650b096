"""MLflow runs: where they are stored, starting or resuming one, logging to it.

The tracking URI is passed in explicitly (the CLI layer reads ``MLFLOW_TRACKING_URI``);
the default is ``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from histoxai.config import Config, dump_yaml, flatten

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def resolve_tracking_uri(explicit: str | None, repo_root: str | Path) -> str:
    """``explicit`` (e.g. ``$MLFLOW_TRACKING_URI``) if set, else ``sqlite:///<repo_root>/mlflow.db``."""
    if explicit:
        return explicit
    return f"sqlite:///{(Path(repo_root).resolve() / 'mlflow.db').as_posix()}"


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifact root for a new experiment: beside the SQLite file (``mlartifacts/<name>``)
    for ``sqlite:///`` stores; the server's or file store's own default otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts" / experiment).as_uri()
    return None


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name))


class TrackedRun:
    """An open MLflow run; every method logs to it.

    Attributes:
        run_id, experiment_id, tracking_uri: where the run lives.
        client: an ``MlflowClient`` on ``tracking_uri``.
    """

    def __init__(self, run_id: str, experiment_id: str, tracking_uri: str):
        self.run_id, self.experiment_id, self.tracking_uri = run_id, experiment_id, tracking_uri
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values as strings, lists as ``[a, b]``), 100 per request."""
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (NaN values are skipped)."""
        log_metrics(self.run_id, metrics, self.tracking_uri, step, client=self.client)

    def log_config(self, cfg: Config) -> None:
        """The resolved config as flat dotted params (``train.lr``) and ``config.yaml``."""
        self.log_params(flatten(cfg))
        self.log_text(dump_yaml(cfg), "config.yaml")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        log_artifacts(self.run_id, paths, artifact_path, self.tracking_uri, client=self.client)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_dataset(self, frame, name: str, source: str, digest: str, context: str = "training") -> None:
        """Record the dataset (lineage: name, source path, content digest, schema) as a run input."""
        with warnings.catch_warnings():  # schema hints about int columns and source guessing
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
            mlflow.log_input(dataset, context=context)


@contextlib.contextmanager
def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[TrackedRun]:
    """Start a run in ``experiment`` (or resume ``run_id``, e.g. ``$MLFLOW_RUN_ID`` under
    ``mlflow run``) and make it the active run; it ends FINISHED, or FAILED on error."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # log_model registers through the global registry URI
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if run_id:
        active = mlflow.start_run(run_id=run_id, tags=dict(tags or {}))
    else:
        exp_id = experiment_id(client, experiment, tracking_uri)
        active = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags or {}))
    run = TrackedRun(active.info.run_id, active.info.experiment_id, tracking_uri)
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


PID_TAG, HOST_TAG = "histoxai.pid", "histoxai.host"


def process_tags() -> dict[str, str]:
    """Run tags naming this process, so a later run can tell a killed run from a live one."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def run_is_dead(run) -> bool:
    """Whether an MLflow run's process is gone: the run has ended, or it is RUNNING with
    :func:`process_tags` naming a process of this host that no longer exists. A RUNNING run
    of another host, or without the tags, counts as alive."""
    if run.info.status != "RUNNING":
        return True
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def end_dead_runs(
    tracking_uri: str, experiment: str, run_name: str, committed: str | None = None
) -> list[str]:
    """End the runs named ``run_name`` in ``experiment`` left RUNNING by a killed process
    (see :func:`run_is_dead`): FINISHED for run ``committed`` (its output was complete when
    the process died), FAILED for the others. Returns ``{run id: status set}``."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs(
        [exp.experiment_id], f"attributes.status = 'RUNNING' and attributes.run_name = '{run_name}'"
    )
    ended = {}
    for run in runs:
        if run_is_dead(run):
            ended[run.info.run_id] = "FINISHED" if run.info.run_id == committed else "FAILED"
            client.set_terminated(run.info.run_id, ended[run.info.run_id])
    return ended


def log_metrics(
    run_id: str,
    metrics: Mapping[str, float],
    tracking_uri: str,
    step: int | None = None,
    client: MlflowClient | None = None,
) -> None:
    """Log ``metrics`` to run ``run_id`` (e.g. the training run named in ``run.json``)."""
    client = client or MlflowClient(tracking_uri, registry_uri=tracking_uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v == v]  # v == v: not NaN
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000], synchronous=True)


def log_artifacts(
    run_id: str,
    paths: Iterable[str | Path],
    artifact_path: str | None,
    tracking_uri: str,
    client: MlflowClient | None = None,
) -> None:
    """Upload files and directories (their contents) to run ``run_id`` under ``artifact_path``."""
    client = client or MlflowClient(tracking_uri, registry_uri=tracking_uri)
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            client.log_artifact(run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or directory")


def log_dict_artifact(run_id: str, obj: Mapping, artifact_file: str, tracking_uri: str) -> None:
    """Log a JSON/YAML-able mapping as an artifact (format from the file extension)."""
    MlflowClient(tracking_uri, registry_uri=tracking_uri).log_dict(run_id, dict(obj), artifact_file)


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = "[" + ", ".join(map(str, value)) + "]"
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
