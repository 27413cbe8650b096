"""Train a regressor on the patch store, track the run in MLflow, register the model.

Run::

    histoxai train                                           # model.targets from params.yaml
    histoxai train --set model.targets=[cc] --set model.registered_name=histoxai-cc
    histoxai train --params params-gpu.yaml                  # the published full-scale setting
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 histoxai train  # another tracking server
    torchrun --nproc-per-node 4 -m histoxai.cli train --params params-gpu.yaml  # DDP, 4 GPUs

Writes ``<base.models_dir>/<model.registered_name>/`` as one unit: ``model.pt`` (load with
``histoxai.models.load_checkpoint``), ``predictions.parquet`` (every patch: ``y_<t>``,
``yhat_<t>``) and ``run.json`` (run id, tracking URI, registered version, store facts). The
run holds the resolved config (params + ``config.yaml``), dataset lineage, per-epoch
metrics, the final ``split/metric_target`` metrics of the best checkpoint and the model,
registered with alias ``candidate`` (and ``champion`` if there is none yet; see
``histoxai promote``). A diverged training (non-finite loss or metrics) fails and registers
nothing; a failed or killed one leaves the previous directory and aliases as they were
(see ``histoxai.training.publish``). Under ``mlflow run`` its run (``$MLFLOW_RUN_ID``) is used.
Under ``torchrun`` every process trains its share of each batch; rank 0 alone logs and writes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from histoxai.config import Config

# torch, timm and mlflow are imported inside the functions so `histoxai --help` stays fast


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Train, track and register as configured; returns the ``run.json`` contents."""
    from histoxai.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri()
    return train(cfg, Path.cwd(), tracking_uri, os.environ.get("MLFLOW_RUN_ID") or None, group=_group(cfg))


def _group(cfg: Config):
    """The torchrun process group of this process (alone without torchrun)."""
    from histoxai.training.distributed import backend_for, group_from_env
    from histoxai.training.runtime import resolve_device

    return group_from_env(os.environ, backend_for(resolve_device(cfg.train.device)))


def train(
    cfg: Config, repo_root: str | Path, tracking_uri: str, run_id: str | None = None, progress: bool = True,
    group=None,
) -> dict:  # fmt: skip
    """The stage body with explicit inputs (tests call this); see
    :func:`histoxai.training.publish.train_and_publish`."""
    from histoxai.data.store import PatchStore

    PatchStore(cfg.base.patches_dir)  # verifies itself: a damaged file is named before torch loads
    from histoxai.training.publish import train_and_publish

    return train_and_publish(cfg, repo_root, tracking_uri, run_id, progress, group)


def final_metrics(pred, targets) -> dict[str, float]:
    """See :func:`histoxai.training.publish.final_metrics`."""
    from histoxai.training.publish import final_metrics as metrics

    return metrics(pred, targets)
