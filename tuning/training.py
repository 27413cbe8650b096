"""The default trainer of a trial (``tune.trainer``): the training stage's session, no files.

It trains with :func:`histoxai.training.session.train_regressor` (the code path of
``histoxai train``), forwards every epoch to the objective (pruning, MLflow metrics),
and logs the kept model to the trial's MLflow run *without* registering it: only the
study's best trial is registered, at the end (see :mod:`histoxai.tuning.report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from histoxai.config import Config
from histoxai.tuning.objective import TrialFailed


class BackboneDoesNotFit(TrialFailed):
    """The backbone cannot process patches of the configured size."""


def check_backbone_fits(name: str, patch_size: int) -> None:
    """Run a blank patch through backbone ``name``; raise a clear error when it cannot
    (see :func:`histoxai.models.backbones.check_backbone`)."""
    from histoxai.errors import InputError
    from histoxai.models.backbones import check_backbone

    try:
        check_backbone(name, patch_size)
    except InputError as err:
        raise BackboneDoesNotFit(f"backbone {name} does not fit {patch_size} px patches: {err}") from None


def train_trial(
    cfg: Config,
    out_dir: Path,
    run_id: str,
    tracking_uri: str,
    on_epoch: Callable[[int, dict[str, float]], None],
) -> dict[str, float]:
    """Train ``cfg`` on the patch store, log the best checkpoint to run ``run_id``.

    Args:
        cfg: the trial's config.
        out_dir: scratch folder of the trial (unused: nothing is written locally).
        run_id: the trial's nested MLflow run.
        tracking_uri: MLflow tracking URI.
        on_epoch: per-epoch callback (raises ``optuna.TrialPruned`` to stop).

    Returns:
        The metrics of the kept (best validation loss) epoch: ``val/r2_<t>``, ``val/loss``, ...
    """
    from histoxai.data.store import PatchStore
    from histoxai.tracking import data_lineage
    from histoxai.tracking.studies import log_trial_model
    from histoxai.training.session import train_regressor

    store = PatchStore(cfg.base.patches_dir)
    check_backbone_fits(cfg.model.backbone, store.patch_size)
    model, result, _ = train_regressor(cfg, store, on_epoch=on_epoch, progress=False)
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
    if best is None:
        losses = [h.get("train/loss") for h in result.history]
        raise FloatingPointError(f"no epoch with a finite validation loss (train/loss per epoch: {losses})")
    metrics = {k: float(v) for k, v in best.items() if isinstance(v, (int, float)) and k != "epoch"}
    if not all(math.isfinite(v) for k, v in metrics.items() if k.startswith("val/r2_")):
        raise FloatingPointError(f"validation R2 is not finite at the best epoch: {metrics}")
    lineage = data_lineage(store.root, Path.cwd())
    tags = {
        "targets": ",".join(cfg.model.targets),
        "data_hash": lineage["data.hash"],
        "split_scheme": cfg.data.split.scheme,
    }
    ids = store.ids("val", cfg.data.split.scheme)[:2]
    example = store.images(ids).transpose(0, 3, 1, 2).astype("float32") / 255
    log_trial_model(tracking_uri, run_id, model, example, tags, best_epoch=result.best_epoch)
    return metrics
