"""The objective: train one sampled configuration and return its validation R2.

The value is ``sum_t w_t * val/r2_t`` over the model's targets (equal weights, i.e. the
mean, unless the space file sets ``objective.weights``), maximised. Every epoch's value is
reported to the pruner and logged with the epoch's metrics to the trial's nested MLflow
run. A trial that fails (invalid sample, a backbone that does not fit the patch size, NaN
loss, out of memory, any exception) is recorded with its reason (user attr
``fail_reason``, MLflow tag ``optuna.fail_reason``) and re-raised so Optuna marks it FAIL
and the study goes on.
"""

from __future__ import annotations

import importlib
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna

from histoxai.config import Config, ConfigError, flatten
from histoxai.tracking import studies
from tuning.space import Space, objective_weights, sample
from tuning.study import REASON_ATTR

# train_fn(cfg, out_dir=..., run_id=..., tracking_uri=..., on_epoch=...) -> validation metrics
# of the kept model. It trains cfg, calls on_epoch(epoch, metrics) after every epoch (an
# exception raised there, e.g. optuna.TrialPruned, must propagate), logs the kept model
# to the MLflow run ``run_id`` with histoxai.tracking.studies.log_trial_model (no
# registration: only the study's best is registered, by tuning.report.finalize).
TrainFn = Callable[..., Mapping[str, float]]

RUN_ATTR = "mlflow_run_id"


class TrialFailed(RuntimeError):
    """The trial cannot produce a valid objective value (the reason is the message)."""


@dataclass(frozen=True)
class StudyContext:
    """Where a trial logs and writes.

    Attributes:
        study_name: Optuna study name.
        tracking_uri: MLflow tracking URI.
        parent_run_id: the study's MLflow parent run.
        trial_root: local folder for trial outputs (``<tune.dir>/<study>``).
    """

    study_name: str
    tracking_uri: str
    parent_run_id: str
    trial_root: Path


def score(metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted sum of ``val/r2_<target>``; NaN when a target's R2 is missing or NaN."""
    total = 0.0
    for target, w in weights.items():
        value = metrics.get(f"val/r2_{target}", math.nan)
        total += w * float(value)
    return total


class Objective:
    """Callable for ``study.optimize``: sample, train, report, log, return the value.

    Args:
        base: the config every trial starts from (params file + overrides).
        space: the search space.
        ctx: study name, MLflow parent run, output folder.
        train_fn: trains a config; default: the ``module:function`` named by ``tune.trainer``.
    """

    def __init__(
        self, base: Config, space: Space, ctx: StudyContext, train_fn: TrainFn | None = None
    ) -> None:
        if train_fn is None:
            train_fn = load_trainer(base.tune.trainer)
        self.base, self.space, self.ctx, self.train_fn = base, space, ctx, train_fn

    def __call__(self, trial: optuna.Trial) -> float:
        ctx = self.ctx
        run_id = None
        try:
            cfg, params = sample(self.space, trial, self.base)
            run_id = studies.start_trial_run(
                ctx.tracking_uri, ctx.parent_run_id, ctx.study_name, trial.number, flatten(cfg), params
            )
            trial.set_user_attr(RUN_ATTR, run_id)
            weights = objective_weights(self.space, cfg.model.targets)
            out_dir = ctx.trial_root / f"trial-{trial.number:04d}"

            def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
                value = score(metrics, weights)
                studies.log_epoch(ctx.tracking_uri, run_id, {**metrics, "objective": value}, epoch)
                print(
                    f"trial {trial.number} epoch {epoch}: validation R2 {value:.4f} "
                    f"(train/loss {metrics.get('train/loss', math.nan):.4f})",
                    flush=True,
                )
                loss = metrics.get("train/loss", 0.0)
                if not math.isfinite(loss):
                    raise TrialFailed(f"NaN loss: train/loss={loss} at epoch {epoch}")
                if math.isfinite(value):
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at epoch {epoch} with validation R2 {value:.4f}")

            metrics = self.train_fn(
                cfg, out_dir=out_dir, run_id=run_id, tracking_uri=ctx.tracking_uri, on_epoch=on_epoch
            )
            value = score(metrics, weights)
            if not math.isfinite(value):
                raise TrialFailed(f"validation R2 is not finite ({value}); metrics {dict(metrics)}")
        except optuna.TrialPruned as err:
            if run_id is not None:
                studies.end_trial_run(ctx.tracking_uri, run_id, "pruned", reason=str(err))
            raise
        except Exception as err:
            reason = fail_reason(err)
            trial.set_user_attr(REASON_ATTR, reason)
            if run_id is not None:
                studies.end_trial_run(ctx.tracking_uri, run_id, "failed", reason=reason)
            _free_accelerator_memory()
            raise
        finally:
            if run_id is not None:
                shutil.rmtree(ctx.trial_root / f"trial-{trial.number:04d}", ignore_errors=True)
        trial.set_user_attr("val_metrics", {k: float(v) for k, v in metrics.items() if k.startswith("val/")})
        studies.end_trial_run(ctx.tracking_uri, run_id, "complete", {"objective": value})
        return value


def load_trainer(spec: str) -> TrainFn:
    """The function named by ``module:function`` (``tune.trainer``)."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"tune.trainer={spec!r}: cannot import it ({err}); expected module:function"
        ) from None
    if not callable(fn):
        raise ConfigError(f"tune.trainer={spec!r} is not callable")
    return fn


def fail_reason(err: BaseException) -> str:
    """A one-line reason for a failed trial (out-of-memory and NaN named as such)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if "out of memory" in text.lower() or name == "OutOfMemoryError":
        return f"out of memory: {text}"[:500]
    if isinstance(err, TrialFailed):
        return text[:500]
    return f"{name}: {text}"[:500]


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort only
        pass
