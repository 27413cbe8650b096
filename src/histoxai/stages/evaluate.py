"""Evaluate a trained model's predictions (every seed) beside the polynomial baseline, the
sample-mean shortcut and the phantom's R² ceilings; write the report and log it to the
training run in MLflow.

Run::

    histoxai evaluate                                  # models/<model.registered_name>/
    histoxai evaluate --model-dir models/histoxai-cc
    histoxai evaluate --set evaluate.baseline_degree=3

Reads ``data/patches`` and ``<model-dir>/predictions.parquet`` + ``run.json`` (+
``seeds/<seed>/predictions.parquet``); writes ``reports/evaluate/<model-dir name>/``
(``metrics/<target>.json`` with the headline numbers, ``all_metrics.json``, ``report.md``,
CSV tables, ``plots/*.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histoxai.config import Config
from histoxai.io import finish_interrupted, output_lock

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", default=None,
        help="training output with predictions.parquet and run.json "
        "(default: <base.models_dir>/<model.registered_name>)",
    )  # fmt: skip


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Evaluate ``--model-dir`` and write ``<base.reports_dir>/evaluate/<name>/``."""
    # torch and the plots are imported here so a bad flag or config fails in a second
    from histoxai.data.store import PatchStore
    from histoxai.evaluation.model_dir import check_model_dir, evaluate_model_dir, log_results
    from histoxai.evaluation.predictions import load_run_info
    from histoxai.evaluation.report import comparison_table, write_report

    model_dir = getattr(args, "model_dir", None) or Path(cfg.base.models_dir) / cfg.model.registered_name
    model_dir = Path(model_dir)
    store = PatchStore(cfg.base.patches_dir)
    run_info = load_run_info(model_dir / "run.json")
    check_model_dir(model_dir, run_info, store)
    out_dir = Path(cfg.base.reports_dir) / "evaluate" / model_dir.name
    with output_lock(out_dir):  # a second writer fails at once
        finish_interrupted(out_dir)  # what a killed run left
        ev, pred, baseline, info, notes = evaluate_model_dir(
            model_dir, store, cfg.evaluate, cfg.data.split.scheme
        )
        write_report(out_dir, ev, pred, baseline, info, notes)
    logged = log_results(run_info, out_dir, ev.metrics)
    print(f"evaluate: {out_dir} ({len(ev.metrics)} metrics{', logged to run ' + logged if logged else ''})")
    print(comparison_table(ev).to_string(float_format=lambda v: f"{v:.3f}"))
    return out_dir
