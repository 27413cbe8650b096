"""Log metrics and files to an existing MLflow run by id (used by ``histoxai xai-eval``
when :mod:`histoxai.tracking` offers no ``log_metrics``/``log_artifacts`` of its own).

Everything goes through :class:`mlflow.MlflowClient` with an explicit run id, so
nothing depends on an active run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def log_metrics(run_id: str, metrics: Mapping[str, float], tracking_uri: str) -> None:
    """Log finite ``metrics`` (name -> value) to run ``run_id`` at step 0."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i : i + _BATCH])


def log_artifacts(run_id: str, paths: Iterable[str | Path], artifact_path: str, tracking_uri: str) -> None:
    """Upload files ``paths`` to run ``run_id`` under ``artifact_path``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
