"""MLflow tracking and registry; the only package that imports mlflow.

Names are loaded on first use (PEP 562), so ``from histoxai.tracking import
resolve_tracking_uri`` checks a tracking URI without importing mlflow, torch or timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "resolve_tracking_uri": "uri",
    "check_tracking_uri": "uri",
    "data_lineage": "lineage",
    "alias_version": "registry",
    "load_registered_model": "registry",
    "promote": "registry",
    "publish_version": "registry",
    "register_regressor": "registry",
    "resolve_model_uri": "registry",
    "TrackedRun": "runs",
    "experiment_id": "runs",
    "log_artifacts": "runs",
    "log_dict_artifact": "runs",
    "log_metrics": "runs",
    "log_params": "runs",
    "log_report": "runs",
    "param_text": "runs",
    "require_run": "runs",
    "start_run": "runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'histoxai.tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"histoxai.tracking.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
