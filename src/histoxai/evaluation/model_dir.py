"""Evaluate a training output directory: its predictions (every seed), the baselines and
the store's R² ceilings; log the results to the training run.

A training output (``histoxai train``) holds ``predictions.parquet`` and ``run.json`` of
the registered model and, when ``base.seeds`` lists more seeds, each further seed's
``seeds/<seed>/predictions.parquet`` (``run.json`` ``seeds``: the registered seed first).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from histoxai.config import EvaluateConfig
from histoxai.data.provenance import check_model_store, file_sha256
from histoxai.data.store import PatchStore
from histoxai.errors import InputError, MissingInputError
from histoxai.evaluation.baseline import baseline_predictions
from histoxai.evaluation.predictions import (
    check_against_store,
    load_predictions,
    load_run_info,
    prediction_targets,
)
from histoxai.evaluation.report import Evaluation, evaluate

CEILING_KEYS: dict[str, str] = {
    "ceiling": "ceilings",
    "oracle": "oracle_ceilings",
    "oracle r2within": "oracle_within_sample",
}
"""Ceiling kind in the report -> key of the store card holding ``{target: R² or null}``
(kind ``"<name> <metric>"`` compares with that metric, e.g. the within-sample R²)."""


def seed_prediction_path(model_dir: str | Path, seed: int) -> Path:
    """Where the predictions of the model trained with a further ``seed`` live."""
    return Path(model_dir) / "seeds" / str(seed) / "predictions.parquet"


def evaluate_model_dir(
    model_dir: str | Path, store: PatchStore, settings: EvaluateConfig, scheme: str
) -> tuple[Evaluation, pd.DataFrame, pd.DataFrame | None, dict, list[str]]:
    """Score a training output against the baselines and ceilings.

    Args:
        model_dir: training output (``predictions.parquet``, ``run.json``).
        store: the patch store the model was trained on.
        settings: the ``evaluate`` config section.
        scheme: split scheme when ``run.json`` does not name one.

    Returns:
        The evaluation, the registered model's predictions, the polynomial baseline's (or
        None), the report's info lines and its notes.
    """
    model_dir = Path(model_dir)
    pred_path = model_dir / "predictions.parquet"
    info = load_run_info(model_dir / "run.json")
    pred = load_predictions(pred_path, info.get("targets"))
    targets = list(info.get("targets") or prediction_targets(pred))
    check_against_store(pred, store, pred_path)
    scheme = info.get("split_scheme") or scheme
    seeds = [int(s) for s in info.get("seeds") or []]
    seed_preds = {seeds[0]: pred} if seeds else {}
    for seed in seeds[1:]:
        path = seed_prediction_path(model_dir, seed)
        seed_preds[seed] = load_predictions(path, targets)
        check_against_store(seed_preds[seed], store, path)
    notes: list[str] = []
    baseline = None
    if settings.baseline:
        baseline, note = polynomial_baseline(store, scheme, targets, pred, pred_path, settings)
        notes.append(note)
    ceilings = card_ceilings(store)
    if "ceiling" in ceilings:
        notes.append("ceiling: noise-limited R² of the phantom's measured targets (store card `ceilings`).")
    if "oracle" in ceilings:
        notes.append(
            "oracle: R² of a strong model on features of the rendered patch and its masks, what the "
            "pixels allow (store card `oracle_ceilings`); `oracle r2within`: its within-sample R²."
        )
    ev = evaluate(pred, targets, baseline, ceilings, seed_preds)
    report_info = {
        "model": info.get("model_name") or model_dir.name,
        "model_uri": info.get("model_uri"),
        "run_id": info.get("run_id"),
        "split_scheme": scheme,
        "seeds": ", ".join(map(str, seeds)) if len(seeds) > 1 else None,
        "data_hash": info.get("data_hash"),
        "predictions": str(pred_path),
        "patch store": str(store.root),
    }
    return ev, pred, baseline, report_info, notes


def polynomial_baseline(
    store: PatchStore,
    scheme: str,
    targets: list[str],
    pred: pd.DataFrame,
    pred_path: Path,
    e: EvaluateConfig,
) -> tuple[pd.DataFrame, str]:
    """The polynomial baseline's predictions in the row order of ``pred``, and its note."""
    base = baseline_predictions(
        store, scheme, targets, e.baseline_degree, e.structure_sigma_px, e.channel, e.density_source
    )
    source = base.attrs.get("density_source", "?")
    base = base.set_index("patch_id").loc[pred["patch_id"].to_numpy()].reset_index()
    differ = base["split"].to_numpy() != pred["split"].to_numpy()
    if differ.any():
        raise ValueError(
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


def card_ceilings(store: PatchStore) -> dict[str, dict[str, float]]:
    """``{kind: {target: R²}}`` from the store card (kinds of :data:`CEILING_KEYS` present)."""
    out = {}
    for kind, key in CEILING_KEYS.items():
        values = store.card.get(key) or {}
        if not isinstance(values, Mapping) or not all(
            v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()
        ):
            raise InputError(
                f"{store.root / 'card.json'}: {key!r} must map targets to numbers or null, got {values!r}"
            )
        values = {str(k): float(v) for k, v in values.items() if v is not None}
        if values:
            out[kind] = values
    return out


def check_model_dir(model_dir: Path, info: Mapping[str, object], store: PatchStore) -> None:
    """Refuse a model directory whose files come from different runs (its predictions are
    not the ones ``run.json`` recorded: evaluating would log into another model's run) or
    whose model was trained on another patch store."""
    recorded = info.get("predictions_sha256")
    pred_path = Path(model_dir) / "predictions.parquet"
    if not pred_path.is_file():
        raise MissingInputError(f"{pred_path} does not exist (run `histoxai train`)")
    if recorded and recorded != file_sha256(pred_path):
        raise InputError(
            f"{pred_path} is not the predictions file of {Path(model_dir) / 'run.json'} "
            f"(run {info.get('run_id')}); the model directory mixes two runs: run `histoxai train` again"
        )
    check_model_store(info, store, str(model_dir))


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
