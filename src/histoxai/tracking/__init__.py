"""MLflow tracking and registry; the only package that imports mlflow."""

from histoxai.tracking.lineage import data_lineage
from histoxai.tracking.registry import (
    alias_version,
    load_registered_model,
    log_regressor,
    promote,
    resolve_model_uri,
)
from histoxai.tracking.runs import (
    TrackedRun,
    experiment_id,
    log_artifacts,
    log_dict_artifact,
    log_metrics,
    log_params,
    log_report,
    param_text,
    resolve_tracking_uri,
    start_run,
)

__all__ = [
    "TrackedRun",
    "alias_version",
    "data_lineage",
    "experiment_id",
    "load_registered_model",
    "log_artifacts",
    "log_dict_artifact",
    "log_metrics",
    "log_params",
    "log_report",
    "log_regressor",
    "param_text",
    "promote",
    "resolve_model_uri",
    "resolve_tracking_uri",
    "start_run",
]
