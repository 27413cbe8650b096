"""Evaluate a trained model's predictions beside the classical baseline and the
phantom's R² ceiling; write the report and log it to the training run in MLflow.

Run::

    histoxai evaluate                                  # models/<model.registered_name>/
    histoxai evaluate --model-dir models/histoxai-cc
    histoxai evaluate --set evaluate.baseline_degree=3

Reads ``data/patches`` and ``<model-dir>/predictions.parquet`` + ``run.json``; writes
``reports/evaluate/<model-dir name>/`` (``metrics.json``, ``report.md``, CSV tables,
``plots/*.png``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from histoxai.config import Config
from histoxai.data.provenance import check_model_store, file_sha256
from histoxai.data.store import PatchStore
from histoxai.errors import InputError
from histoxai.evaluation.baseline import baseline_predictions
from histoxai.evaluation.predictions import (
    check_against_store,
    load_predictions,
    load_run_info,
    prediction_targets,
)
from histoxai.evaluation.report import comparison_table, evaluate, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", default=None,
        help="training output with predictions.parquet and run.json "
        "(default: <base.models_dir>/<model.registered_name>)",
    )  # fmt: skip


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Evaluate ``--model-dir`` and write ``<base.reports_dir>/evaluate/<name>/``."""
    model_dir = getattr(args, "model_dir", None) or Path(cfg.base.models_dir) / cfg.model.registered_name
    model_dir = Path(model_dir)
    pred_path = model_dir / "predictions.parquet"
    info = load_run_info(model_dir / "run.json")
    pred = load_predictions(pred_path, info.get("targets"))
    targets = list(info.get("targets") or prediction_targets(pred))
    store = PatchStore(cfg.base.patches_dir)
    check_model_dir(model_dir, info, store)
    check_against_store(pred, store, pred_path)
    scheme = info.get("split_scheme") or cfg.data.split.scheme

    notes: list[str] = []
    baseline = None
    if cfg.evaluate.baseline:
        baseline, note = _baseline(cfg, store, scheme, targets, pred, pred_path)
        notes.append(note)
    ceilings = _ceilings(store)
    if ceilings:
        notes.append("ceiling: noise-limited R² of the phantom's measured targets (store card `ceilings`).")
    ev = evaluate(pred, targets, baseline, ceilings)

    out_dir = Path(cfg.base.reports_dir) / "evaluate" / model_dir.name
    report_info = {
        "model": info.get("model_name") or model_dir.name,
        "model_uri": info.get("model_uri"),
        "run_id": info.get("run_id"),
        "split_scheme": scheme,
        "data_hash": info.get("data_hash"),
        "predictions": str(pred_path),
        "patch store": str(store.root),
    }
    write_report(out_dir, ev, pred, baseline, report_info, notes)
    logged = log_results(info, out_dir, ev.metrics)
    print(f"evaluate: {out_dir} ({len(ev.metrics)} metrics{', logged to run ' + logged if logged else ''})")
    print(comparison_table(ev).to_string(float_format=lambda v: f"{v:.3f}"))
    return out_dir


def check_model_dir(model_dir: Path, info: Mapping[str, object], store: PatchStore) -> None:
    """Refuse a model directory whose files come from different runs (its predictions are
    not the ones ``run.json`` recorded: evaluating would log into another model's run) or
    whose model was trained on another patch store."""
    recorded = info.get("predictions_sha256")
    pred_path = model_dir / "predictions.parquet"
    if recorded and recorded != file_sha256(pred_path):
        raise ValueError(
            f"{pred_path} is not the predictions file of {model_dir / 'run.json'} (run {info.get('run_id')}); "
            "the model directory mixes two runs: run `histoxai train` again"
        )
    check_model_store(info, store, str(model_dir))


def _baseline(
    cfg: Config, store: PatchStore, scheme: str, targets: list[str], pred: pd.DataFrame, pred_path: Path
) -> tuple[pd.DataFrame, str]:
    e = cfg.evaluate
    base = baseline_predictions(
        store, scheme, targets, e.baseline_degree, e.structure_sigma_px, e.channel, e.density_source
    )
    source = base.attrs.get("density_source", "?")
    base = base.set_index("patch_id").loc[pred["patch_id"].to_numpy()].reset_index()
    differ = base["split"].to_numpy() != pred["split"].to_numpy()
    if differ.any():
        raise InputError(
            f"predictions file {pred_path}: split of patch {int(pred['patch_id'].to_numpy()[differ][0])} differs "
            f"from store column split_{scheme}; was the store re-prepared after training?"
        )
    note = (
        f"baseline: degree-{e.baseline_degree} polynomial in nuclei density (nuclei per mm², counted by "
        + (
            "the classical detector `histoxai.data.nuclei.count_nuclei`"
            if source == "detector"
            else "the store's `cc`"
        )
        + f") and structure-tensor coherence ({e.channel}, σ = {e.structure_sigma_px} px), "
        "least squares on the train split."
    )
    if source == "cc" and "cc" in targets:
        note += " Its `cc` prediction uses the measured count, so it is not a fair comparison for `cc`."
    return base, note


def _ceilings(store: PatchStore) -> dict[str, float]:
    ceilings = store.card.get("ceilings") or {}
    if not isinstance(ceilings, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in ceilings.values()
    ):
        raise InputError(
            f"{store.root / 'card.json'}: 'ceilings' must map targets to numbers, got {ceilings!r}"
        )
    return {str(k): float(v) for k, v in ceilings.items()}


def log_results(info: Mapping[str, object], out_dir: Path, metrics: Mapping[str, float]) -> str | None:
    """Log ``metrics`` and the report files to the MLflow run of ``run.json``.

    Skipped (returns None) when ``run.json`` has no ``run_id``. The tracking URI is
    ``MLFLOW_TRACKING_URI`` when set, else the one recorded in ``run.json``.

    Returns:
        The run id logged to, or None.
    """
    run_id = info.get("run_id")
    if not run_id:
        return None
    from histoxai.tracking import log_report, resolve_tracking_uri

    uri = resolve_tracking_uri(recorded=info.get("tracking_uri"), must_exist=True)
    log_report(str(run_id), uri, metrics, out_dir, "evaluate")
    return str(run_id)
