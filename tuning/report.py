"""Finish a study: counts, best trial, plots on the parent run, the ``champion`` alias.

Safe to run again (``histoxai tune --finalize``): plots are overwritten, and the best
trial's model version is found by its tags instead of being registered twice.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from histoxai.config import Config, apply_overrides
from histoxai.io import write_json
from histoxai.tracking import studies
from histoxai.tuning.objective import RUN_ATTR, StudyContext
from histoxai.tuning.space import Space
from histoxai.tuning.study import counted_trials, fail_reasons, retried_numbers

PLOTS: dict[str, Callable[[optuna.Study], object]] = {
    "optimization_history": optuna.visualization.plot_optimization_history,
    "param_importances": optuna.visualization.plot_param_importances,
    "parallel_coordinate": optuna.visualization.plot_parallel_coordinate,
}


def summarize(study: optuna.Study) -> dict:
    """Counts per state and the best trial (number, value, params, MLflow run)."""
    trials = study.get_trials(deepcopy=False)
    counted = counted_trials(study)
    states = [t.state for t in counted]
    summary = {
        "study_name": study.study_name,
        "n_trials": len(counted),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING) + states.count(TrialState.WAITING),
        "requeued": len(retried_numbers(trials)),
        "failures": fail_reasons(study, counted),
        "best": None,
    }
    if summary["complete"]:
        best = study.best_trial
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_id": best.user_attrs.get(RUN_ATTR),
            "val_metrics": best.user_attrs.get("val_metrics", {}),
        }
    return summary


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write the study's Optuna plots as self-contained HTML; skip those that cannot be drawn."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = plot(study)
            path = out_dir / f"{name}.html"
            fig.write_html(path, include_plotlyjs=True, full_html=True)
            paths.append(path)
        except Exception as err:  # e.g. importances need two complete trials
            print(f"note: plot {name} skipped: {err}", file=sys.stderr)
    return paths


def finalize(cfg: Config, study: optuna.Study, ctx: StudyContext, space: Space) -> dict:
    """Summarise ``study``, log plots to its parent run and register the best model.

    The best trial's model is registered under ``model.registered_name`` (after the
    space's ``fixed`` overrides) with alias ``champion`` when ``tune.register`` is set.
    The summary is also written to ``<tune.dir>/<study>/summary.json``.
    """
    summary = summarize(study)
    model_name = apply_overrides(cfg, space.fixed).model.registered_name
    best = summary["best"]
    tags = {"optuna.best_trial": "none", "optuna.n_trials": str(summary["n_trials"])}
    if best is not None and best["run_id"] and cfg.tune.register:
        version, created = studies.register_trial_model(
            ctx.tracking_uri, model_name, best["run_id"], ctx.study_name, best["number"]
        )
        best.update(model_name=model_name, model_version=version, model_uri=f"models:/{model_name}/{version}")
        print(
            f"champion: {model_name} version {version} ({'registered' if created else 'already registered'})"
        )
    if best is not None:
        tags.update(
            {"optuna.best_trial": str(best["number"]), "optuna.best_params": json.dumps(best["params"])}
        )
        if "model_version" in best:
            tags["optuna.champion"] = best["model_uri"]
    metrics = {k: float(summary[k]) for k in ("n_trials", "complete", "pruned", "failed", "requeued")}
    if best is not None and math.isfinite(best["value"]):
        metrics["best_value"] = best["value"]
    with tempfile.TemporaryDirectory() as tmp:
        plots = write_plots(study, Path(tmp))
        status = "RUNNING" if summary["running"] else "FINISHED"
        studies.finish_study_run(ctx.tracking_uri, ctx.parent_run_id, metrics, tags, plots, status=status)
    summary["parent_run_id"] = ctx.parent_run_id
    write_json(ctx.trial_root / "summary.json", summary)
    return summary


def describe(summary: dict) -> str:
    """The summary of :func:`summarize` (plus the champion, if registered) as console lines."""
    lines = [
        f"study {summary['study_name']}: {summary['n_trials']} trials "
        f"({summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed, "
        f"{summary['requeued']} re-queued after a worker died)"
    ]
    for number, reason in summary["failures"].items():
        lines.append(f"  trial {number} failed: {reason}")
    best = summary["best"]
    if best:
        lines.append(f"best trial {best['number']}: validation R2 {best['value']:.4f}")
        lines += [f"  {k} = {v}" for k, v in best["params"].items()]
        if "model_uri" in best:
            lines.append(f"  registered as {best['model_uri']} (alias champion)")
    return "\n".join(lines)
