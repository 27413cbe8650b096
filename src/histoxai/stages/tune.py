"""Tune hyperparameters with Optuna: one MLflow parent run, one nested run per trial.

Run::

    histoxai tune --space tuning/spaces/light-mdfa.yaml --n-trials 50
    histoxai tune --space tuning/spaces/light-cc.yaml --study-name histoxai-cc --workers 2
    histoxai tune --storage postgresql+psycopg2://user:pw@db/optuna --study-name s1   # on each machine
    histoxai tune --study-name s1 --finalize          # re-summarise, (re)set champion

Flags override the ``tune`` section of the params file (``--set tune.x=...`` works too).
Running the same command again resumes the study. Watch it with ``mlflow ui`` and
``optuna-dashboard <storage>``. The guide: docs/tuning.md.
"""

from __future__ import annotations

import argparse
import os

from histoxai.config import Config

_FLAGS = ("space", "n_trials", "workers", "storage", "study_name", "sampler", "pruner")  # tune.<flag>


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", help="search-space YAML (tune.space)")
    parser.add_argument("--n-trials", type=int, help="trials in total across workers (tune.n_trials)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine (tune.workers)")
    parser.add_argument(
        "--storage", help="journal file or RDB URL, e.g. postgresql+psycopg2://u:p@host/db (tune.storage)"
    )
    parser.add_argument("--study-name", help="study name; the same name resumes or joins (tune.study_name)")
    parser.add_argument("--sampler", help="tpe, random or cmaes (tune.sampler)")
    parser.add_argument("--pruner", help="median, hyperband or none (tune.pruner)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite mlflow.db)"
    )
    parser.add_argument(
        "--finalize", action="store_true", help="run no trials; summarise and set the champion"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # started by --workers K


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Run the study of ``cfg.tune`` (with flag overrides) and print its summary."""
    from histoxai.config import apply_overrides
    from histoxai.tuning.space import load_space

    args = args or argparse.Namespace()
    flags = {f"tune.{k}": getattr(args, k) for k in _FLAGS if getattr(args, k, None) is not None}
    cfg = apply_overrides(cfg, flags)
    load_space(cfg.tune.space, cfg)  # a bad space fails before torch and mlflow load

    from histoxai.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(getattr(args, "tracking_uri", None))  # before torch and mlflow load
    from histoxai.tuning.launcher import launch
    from histoxai.tuning.report import describe

    summary = launch(
        cfg,
        tracking_uri,
        finalize_only=getattr(args, "finalize", False),
        worker=getattr(args, "worker", False),
        run_id=os.environ.get("MLFLOW_RUN_ID") or None,  # under `mlflow run`: the study's parent
    )
    if summary:
        print(describe(summary))
    return summary
