"""Run a study: set it up, start the workers, then finalise (summary, plots, champion).

``launch`` is what ``histoxai tune`` calls. With ``tune.workers`` = K > 1 it starts K
worker processes (``histoxai tune --worker``) on this machine, each with its own
``CUDA_VISIBLE_DEVICES`` when GPUs exist; another machine joins by running the same
command with the same ``tune.storage`` URL and ``tune.study_name``. Running the command
again resumes the study: finished trials stay, trials of dead workers are re-queued,
and only the missing part of ``tune.n_trials`` runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna

from histoxai.config import Config, dump_yaml
from histoxai.errors import InputError
from histoxai.io import write_text
from histoxai.tracking import studies
from tuning.objective import RUN_ATTR, Objective, StudyContext, TrainFn
from tuning.report import finalize
from tuning.space import Space, load_space
from tuning.study import (
    BudgetLock,
    RetryStale,
    counted_trials,
    make_pruner,
    make_sampler,
    open_storage,
    redact,
    run_worker,
    storage_kind,
    storage_url,
)

PARENT_ATTR = "mlflow_parent_run_id"


@dataclass
class Study:
    """An opened study with what its workers need."""

    study: optuna.Study
    space: Space
    ctx: StudyContext
    lock: BudgetLock
    retry: RetryStale


def open_study(
    cfg: Config,
    tracking_uri: str,
    pruner: optuna.pruners.BasePruner | None = None,
    run_id: str | None = None,
    worker: bool = False,
) -> Study:
    """Create or load the study of ``cfg.tune`` and its MLflow parent run.

    Creation happens under the budget lock, so workers started together (or on several
    machines) agree on one study, one parent run and one copy of the space's
    ``enqueue`` list. ``run_id``: an MLflow run to adopt as the parent of a new study
    (``$MLFLOW_RUN_ID`` under ``mlflow run``). ``worker``: only join; leave the parent
    run as the launcher set it.
    """
    tune = cfg.tune
    space = load_space(tune.space, cfg)
    max_epochs = _max_epochs(space, cfg)
    on_stale = _stale_logger(tracking_uri)
    retry = RetryStale(tune.max_retry, on_stale)
    storage = open_storage(tune, on_stale)
    lock = BudgetLock(tune)
    experiment = tune.experiment or cfg.train.experiment
    with lock:
        study = optuna.create_study(
            storage=storage,
            study_name=tune.study_name,
            direction="maximize",
            sampler=make_sampler(tune.sampler, cfg.base.seed),
            pruner=pruner or make_pruner(tune, max_epochs),
            load_if_exists=True,
        )
        parent = study.user_attrs.get(PARENT_ATTR)
        settings = {
            "study_name": tune.study_name,
            "space": str(tune.space),
            "sampler": tune.sampler,
            "pruner": tune.pruner if pruner is None else type(pruner).__name__,
            "storage_kind": storage_kind(storage_url(tune)),
            "storage": redact(storage_url(tune)),
            "n_trials": tune.n_trials,
            "seed": cfg.base.seed,
            "objective_weights": space.weights or "mean",
        }
        if parent is None and not study.trials:
            for params in space.enqueue[: tune.n_trials]:
                study.enqueue_trial(params)
            study.set_user_attr("space", str(tune.space))
        elif study.user_attrs.get("space") != str(tune.space):
            print(
                f"warning: study {tune.study_name} was created with space {study.user_attrs.get('space')}, "
                f"now {tune.space}",
                file=sys.stderr,
            )
        if not (worker and parent):
            files = [space.path] if parent is None else []
            found = studies.start_study_run(
                tracking_uri, experiment, tune.study_name, settings, files, parent or run_id
            )
            if found != parent:
                study.set_user_attr(PARENT_ATTR, found)
            parent = found
    ctx = StudyContext(tune.study_name, tracking_uri, parent, Path(tune.dir) / tune.study_name)
    return Study(study, space, ctx, lock, retry)


def run_trials(cfg: Config, opened: Study, train_fn: TrainFn | None = None) -> int:
    """Run this process's share of the study; returns how many trials it ran."""
    objective = Objective(cfg, opened.space, opened.ctx, train_fn)
    seed, name = cfg.base.seed, cfg.tune.sampler
    return run_worker(
        opened.study,
        objective,
        cfg.tune.n_trials,
        opened.lock,
        opened.retry,
        sampler_for=lambda n: make_sampler(name, seed + n),
    )


def launch(
    cfg: Config,
    tracking_uri: str,
    finalize_only: bool = False,
    worker: bool = False,
    train_fn: TrainFn | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    run_id: str | None = None,
) -> dict:
    """Run (or join, or resume) the study of ``cfg.tune`` and return its summary.

    Args:
        cfg: the resolved config (``tune`` section included).
        tracking_uri: MLflow tracking URI.
        finalize_only: skip running trials; only summarise and register the champion.
        worker: run trials in this process only (no sub-workers, no finalisation).
        train_fn: replaces ``tune.trainer`` (tests; in-process only).
        pruner: replaces the configured pruner (tests; in-process only).
        run_id: MLflow run to adopt as the parent run of a new study (``mlflow run``).

    Returns:
        The study summary (see :func:`tuning.report.finalize`); empty for a worker.
    """
    if finalize_only and cfg.tune.study_name not in optuna.get_all_study_names(open_storage(cfg.tune)):
        raise InputError(f"no study {cfg.tune.study_name!r} in {redact(storage_url(cfg.tune))} to finalize")
    opened = open_study(cfg, tracking_uri, pruner, run_id=run_id, worker=worker)
    if worker:
        run_trials(cfg, opened, train_fn)
        return {}
    if not finalize_only:
        if cfg.tune.workers == 1:
            run_trials(cfg, opened, train_fn)
        else:
            codes = run_worker_processes(cfg, tracking_uri, opened.ctx.trial_root)
            if any(codes):
                print(f"warning: worker exit codes {codes}", file=sys.stderr)
    return finalize(cfg, opened.study, opened.ctx, opened.space)


def run_worker_processes(cfg: Config, tracking_uri: str, folder: Path) -> list[int]:
    """Start ``tune.workers`` ``histoxai tune --worker`` processes, wait, return their exit codes.

    The workers read the launcher's resolved config from ``folder/params.yaml``; with
    GPUs, worker i sees only GPU ``i mod n_gpus``.
    """
    params = write_text(folder / "params.yaml", dump_yaml(cfg))
    gpus = _gpu_count()
    cmd = [sys.executable, "-m", "histoxai.cli", "tune", "--worker", "--params", str(params)]
    procs = []
    for i in range(cfg.tune.workers):
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env["MLFLOW_TRACKING_URI"] = tracking_uri
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen(cmd + ["--tracking-uri", tracking_uri], env=env))
    return [p.wait() for p in procs]


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:
        return 0
    if visible is not None and n:
        ids = [v for v in visible.split(",") if v.strip()]
        return min(n, len(ids))
    return n


def _max_epochs(space: Space, cfg: Config) -> int:
    for dim in space.dimensions:
        if dim.key == "train.epochs" and dim.kind == "int":
            return int(dim.spec["high"])
        if dim.key == "train.epochs" and dim.kind == "categorical":
            return int(max(dim.spec["choices"]))
    return int(space.fixed.get("train.epochs", cfg.train.epochs))


def _stale_logger(tracking_uri: str):
    def on_stale(trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id:
            try:
                studies.end_trial_run(
                    tracking_uri, run_id, "killed", reason="worker died; parameters re-queued"
                )
            except Exception as err:  # the trial's run may be gone; the retry matters more
                print(f"warning: could not close MLflow run {run_id}: {err}", file=sys.stderr)

    return on_stale


def progress(study: optuna.Study, n_trials: int) -> str:
    """One line: how much of the budget is used."""
    counted = counted_trials(study)
    states = [t.state.name.lower() for t in counted]
    return f"{len(counted)}/{n_trials} trials: " + ", ".join(
        f"{s} {states.count(s)}" for s in sorted(set(states))
    )
