"""Record a saliency run (``histoxai explain``) as its own MLflow run.

A separate run, tagged with the explained model's name, version and training run, so
re-running with other methods never collides with the training run's immutable params.
Everything goes through :class:`mlflow.MlflowClient` with explicit ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def log_explain_run(
    tracking_uri: str,
    experiment: str,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Iterable[str | Path] = (),
) -> str:
    """Create a finished run in ``experiment`` holding the saliency run's record.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (created when missing).
        model: the explained model: ``name``, ``version``, ``run_id``, ``uri``.
        params: flat params (values stringified, cut to MLflow's 6000 characters).
        metrics: flat metrics (non-finite values are left out).
        artifacts: files to attach (e.g. the store's ``manifest.json``).

    Returns:
        The new run's id.
    """
    from histoxai.tracking.runs import client, experiment_id, log_metrics, log_params

    tags = {
        "histoxai.stage": "explain",
        "histoxai.model_name": str(model.get("name", "")),
        "histoxai.model_version": str(model.get("version", "")),
        "histoxai.model_uri": str(model.get("uri", "")),
        "histoxai.source_run_id": str(model.get("run_id", "")),
    }
    c = client(tracking_uri)
    run = c.create_run(
        experiment_id(tracking_uri, experiment),
        run_name=f"explain-{model.get('name', '')}-v{model.get('version', '')}",
        tags=tags,
    )
    run_id = run.info.run_id
    log_params(run_id, params, tracking_uri)
    log_metrics(run_id, metrics, tracking_uri)
    for path in artifacts:
        c.log_artifact(run_id, str(path))
    c.set_terminated(run_id)
    return run_id


def log_explain_store(
    tracking_uri: str, experiment: str, explain: Any, store: Any, model: Mapping[str, Any]
) -> str:
    """Record a finished saliency store: the ``explain`` config section as flat params,
    which model was explained and why, pair counts, timings and precision statistics.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name.
        explain: the ``ExplainConfig`` section.
        store: the ``SaliencyStore`` written.
        model: the explained model (``name``, ``version``, ``run_id``, ``uri``).
    """
    import json

    from histoxai.config import flatten

    manifest = store.manifest
    params = {f"explain.{k}": v for k, v in flatten(explain).items()}
    params.update(
        {
            "explain.resolved_uri": manifest.get("model_uri", ""),
            "explain.model_version": manifest.get("model_version", ""),
            "explain.model_source": manifest.get("model_source", ""),
            "explain.variants": json.dumps(store.variants),
            "explain.passes_per_call": json.dumps(manifest.get("passes_per_call", {})),
            "explain.output": str(store.root),
        }
    )
    metrics: dict[str, float] = {
        "explain/n_patches": len(store.patch_ids),
        "explain/n_pairs": len(manifest.get("complete", [])),
    }
    for pair, t in manifest.get("timings", {}).items():
        metrics[f"explain/maps_per_s_{pair}"] = t["maps_per_s"]
        metrics[f"explain/seconds_{pair}"] = t["seconds"]
        metrics[f"explain/subnormal_fraction_{pair}"] = t.get("subnormal_fraction", float("nan"))
    return log_explain_run(tracking_uri, experiment, model, params, metrics, [store.root / "manifest.json"])
