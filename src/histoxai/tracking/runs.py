"""MLflow runs: where they are stored, starting or resuming one, logging to it.

The one seam between histoxai and MLflow's tracking API:

- :func:`~histoxai.tracking.uri.resolve_tracking_uri` (in ``uri.py``, which imports no
  mlflow, so a dead store is reported before the heavy imports): which store, checked;
- :func:`experiment_id`: find or create an experiment (safe when workers race);
- :func:`param_text`: how a param value is written (lists as ``[md, fa]``, the YAML
  flow style ``--set`` accepts), so training and trial runs compare column by column;
- :func:`log_metrics`, :func:`log_artifacts`, :func:`log_report`: log to a run by id.
"""

from __future__ import annotations

import contextlib
import math
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
from mlflow.exceptions import MlflowException

from histoxai.config import Config, dump_yaml, flatten
from histoxai.errors import TrackingError

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def client(tracking_uri: str) -> MlflowClient:
    """A client bound to ``tracking_uri`` (tracking and registry)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifact root for a new experiment: beside the SQLite file (``mlartifacts/<name>``)
    for ``sqlite:///`` stores; the server's or file store's own default otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts" / experiment).as_uri()
    return None


def experiment_id(tracking_uri: str, name: str) -> str:
    """Id of experiment ``name``, created if missing (safe when workers race)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name))
    except Exception:  # another process created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def param_text(value: Any) -> str:
    """A param value as MLflow stores it: lists as ``[a, b]``, cut to MLflow's limit."""
    if isinstance(value, (list, tuple)):
        value = "[" + ", ".join(map(str, value)) + "]"
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def log_params(run_id: str, params: Mapping[str, Any], tracking_uri: str) -> None:
    """Log ``params`` (formatted by :func:`param_text`) to run ``run_id``, 100 per request."""
    c = client(tracking_uri)
    items = [Param(str(k), param_text(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100], synchronous=True)


class TrackedRun:
    """An open MLflow run; every method logs to it.

    Attributes:
        run_id, experiment_id, tracking_uri: where the run lives.
        client: an ``MlflowClient`` on ``tracking_uri``.
    """

    def __init__(self, run_id: str, experiment_id: str, tracking_uri: str):
        self.run_id, self.experiment_id, self.tracking_uri = run_id, experiment_id, tracking_uri
        self.client = client(tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (see :func:`param_text`), 100 per request."""
        log_params(self.run_id, params, self.tracking_uri)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (NaN values are skipped)."""
        log_metrics(self.run_id, metrics, self.tracking_uri, step)

    def log_config(self, cfg: Config) -> None:
        """The resolved config as flat dotted params (``train.lr``) and ``config.yaml``."""
        self.log_params(flatten(cfg))
        self.log_text(dump_yaml(cfg), "config.yaml")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        log_artifacts(self.run_id, paths, artifact_path, self.tracking_uri)

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
    with global_tracking_uri(tracking_uri):  # the fluent API (log_model, log_input) reads it
        if run_id:
            active = mlflow.start_run(run_id=run_id, tags=dict(tags or {}))
        else:
            exp_id = experiment_id(tracking_uri, experiment)
            active = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags or {}))
        run = TrackedRun(active.info.run_id, active.info.experiment_id, tracking_uri)
        try:
            yield run
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")


@contextlib.contextmanager
def global_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI (what its fluent API and the SQL registry's
    model lookup read) at ``tracking_uri`` for the block, then put back what was there.

    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI`` (for subprocesses), so
    the variable is the state to restore: a caller's own setting comes back, and none is
    left behind where there was none. MLflow's private ``_use_tracking_uri`` instead
    unsets a variable the user had set.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


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
) -> None:
    """Log the finite numbers of ``metrics`` to run ``run_id`` at ``step`` (NaN, inf and
    non-numbers are left out)."""
    c = client(tracking_uri)
    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i : i + 1000], synchronous=True)


def log_artifacts(
    run_id: str,
    paths: Iterable[str | Path],
    artifact_path: str | None,
    tracking_uri: str,
) -> None:
    """Upload files and directories (their contents) to run ``run_id`` under ``artifact_path``."""
    c = client(tracking_uri)
    for path in map(Path, paths):
        if path.is_dir():
            c.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            c.log_artifact(run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or directory")


def require_run(run_id: str, tracking_uri: str, written: str | Path | None = None) -> None:
    """Raise :class:`TrackingError` naming the run and the store unless run ``run_id`` is
    in the store at ``tracking_uri`` (a stage logging to a model's run reads the store
    from ``$MLFLOW_TRACKING_URI`` or the model's ``run.json``). ``written``: the report
    the stage already wrote, which the message says is kept."""
    try:
        client(tracking_uri).get_run(run_id)
    except MlflowException as err:
        kept = f"; {written} is written, only logging it failed" if written else ""
        raise TrackingError(
            f"MLflow run {run_id} is not in the tracking store {tracking_uri} ({err.error_code}): "
            "point MLFLOW_TRACKING_URI at the store the model was trained with "
            f"(run.json's tracking_uri), or unset it to use that one{kept}"
        ) from None


def log_report(
    run_id: str, tracking_uri: str, metrics: Mapping[str, float], report_dir: str | Path, artifact_path: str
) -> None:
    """Log a stage's ``metrics`` and its report directory to an existing run
    (:func:`require_run` first, so a missing run is a clear error).

    The report's top-level ``.json``, ``.md`` and ``.csv`` files go under
    ``artifact_path``, its ``plots/*.png`` under ``artifact_path/plots``.
    """
    report_dir = Path(report_dir)
    require_run(run_id, tracking_uri, report_dir)
    log_metrics(run_id, metrics, tracking_uri)
    top = sorted(p for p in report_dir.iterdir() if p.is_file() and p.suffix in (".json", ".md", ".csv"))
    log_artifacts(run_id, top, artifact_path, tracking_uri)
    plots = sorted((report_dir / "plots").glob("*.png"))
    log_artifacts(run_id, plots, f"{artifact_path}/plots", tracking_uri)


def log_dict_artifact(run_id: str, obj: Mapping, artifact_file: str, tracking_uri: str) -> None:
    """Log a JSON/YAML-able mapping as an artifact (format from the file extension)."""
    client(tracking_uri).log_dict(run_id, dict(obj), artifact_file)
