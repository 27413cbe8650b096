"""Saliency maps of a trained model over a split of the patch store.

Explains the checkpoint in ``explain.model_dir`` (the pipeline passes the train stage's
output, so DVC tracks exactly which model is explained) or else the registry model
``explain.model_uri`` (resolved to one version, recorded). Every head of the model (or
``explain.targets``) with every variant of ``explain.methods`` on ``explain.split`` of
the trained split scheme, into a SaliencyStore at ``explain.output_dir`` (default
``base.saliency_dir``/<registered model name>); a ``model_dir`` trained with several
``base.seeds`` has each further seed's model explained on the same patches into
``<store>/seeds/<seed>/`` (``histoxai xai-eval`` pools them). A killed run started again redoes at
most one chunk per worker; a failed run leaves the previous store intact. The run is
recorded in MLflow (experiment ``train.experiment``).

Run::

    histoxai explain --set explain.model_dir=models/histoxai-mdfa
    histoxai explain --set explain.model_uri=models:/histoxai-cc/3 --set explain.split=all
    torchrun --nproc-per-node 4 -m histoxai.cli explain      # 4 workers (one per GPU), one store
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from histoxai.config import Config

# torch and captum are imported inside run() so a bad flag or config fails in a second


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Load the model, write its saliency store (this worker's share), log the run."""
    from histoxai.explain.job import explain_model, explain_seeds, load_explained_model
    from histoxai.explain.methods import resolve_variants
    from histoxai.tracking import resolve_tracking_uri
    from histoxai.tracking.explain_log import log_explain_store
    from histoxai.training.distributed import group_from_env

    resolve_variants(cfg.explain.methods)  # a bad method or parameter fails before the model loads
    tracking_uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())
    group = group_from_env(os.environ)
    model, info = load_explained_model(cfg.explain, tracking_uri)
    store = explain_model(cfg, model, info, group)
    explain_seeds(cfg, info, store, group)
    if group.is_main:
        log_explain_store(tracking_uri, cfg.train.experiment, cfg.explain, store, info)
    return store.root
