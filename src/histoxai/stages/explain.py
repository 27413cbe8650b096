"""Saliency maps of a registered model over a split of the patch store.

Pulls ``explain.model_uri`` from the MLflow registry (any model URI; the resolved
version is recorded), explains every head of the model (or ``explain.targets``) with
every variant of ``explain.methods`` on ``explain.split`` of the trained split scheme,
and writes a SaliencyStore to ``explain.output_dir`` (default
``base.saliency_dir``/<registered model name>). A killed run started again finishes
the pairs it had not written. The run is recorded in MLflow (experiment
``train.experiment``, tagged with the model's name and version).

Run::

    histoxai explain
    histoxai explain --set explain.model_uri=models:/histoxai-cc@candidate --set explain.split=all
    histoxai explain --set 'explain.methods=[gradcam, {name: sg, method: smoothgrad, params: {sigma: 0.3}}]'
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from histoxai.config import Config, flatten
from histoxai.data.store import PatchStore
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.explain.store import SaliencyStore


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Load the model from the registry, write its saliency store, log the run."""
    from histoxai.tracking import load_registered_model, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())
    model, info = load_registered_model(cfg.explain.model_uri, tracking_uri)
    store = explain_model(cfg, model, info)
    log_run(cfg, store, info, tracking_uri)
    return store.root


def select_ids(
    patches: PatchStore, split: str, scheme: str, max_patches: int = 0, seed: int = 0
) -> np.ndarray:
    """Patch ids of ``split`` (``all``: every patch) of ``scheme``, at most ``max_patches``
    (0: no limit) drawn at random with ``seed``, in ascending order."""
    ids = patches.ids(split=None if split == "all" else split, scheme=scheme)
    if not len(ids):
        raise ValueError(f"explain.split={split!r}: no patches of split scheme {scheme!r} in {patches.root}")
    if max_patches and len(ids) > max_patches:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_patches, replace=False))
    return ids


def explain_model(cfg: Config, model: Any, info: Mapping[str, Any]) -> SaliencyStore:
    """The stage without the registry: explain ``model`` (described by ``info``: name,
    version, uri, run_id) as configured."""
    ex = cfg.explain
    variants = resolve_variants(ex.methods)
    patches = PatchStore(cfg.base.patches_dir)
    tags = dict(info.get("tags") or {})
    # The split scheme the model was trained on (a registry version tag), else the config's.
    scheme = str(info.get("split_scheme") or tags.get("split_scheme") or cfg.data.split.scheme)
    ids = select_ids(patches, ex.split, scheme, ex.max_patches, cfg.base.seed)
    out = Path(ex.output_dir) if ex.output_dir else Path(cfg.base.saliency_dir) / str(info["name"])
    print(
        f"explain: {info.get('uri', ex.model_uri)} ({ex.model_uri}) on {len(ids)} {ex.split} patches "
        f"({scheme}); {len(variants)} variants x {len(ex.targets or model.targets)} targets -> {out}"
    )
    store = explain_patches(
        model,
        patches,
        ids,
        out,
        variants,
        targets=ex.targets or None,
        score=ex.score,
        split_scheme=scheme,
        batch_size=ex.batch_size,
        chunk_size=ex.chunk_size,
        device=ex.device,
        precision=ex.precision,
        seed=cfg.base.seed,
        manifest={
            "model_uri": str(info.get("uri", ex.model_uri)),
            "requested_uri": ex.model_uri,
            "model_name": str(info.get("name", "")),
            "model_version": str(info.get("version", "")),
            "run_id": str(info.get("run_id", "")),
            "split": ex.split,
            "data_hash": str(tags.get("data_hash", "")),
        },
    )
    for pair, t in store.manifest.get("timings", {}).items():
        print(f"  {pair:<40} {t['maps_per_s']:>9.1f} maps/s  {t['seconds']:>8.1f} s")
    return store


def log_run(cfg: Config, store: SaliencyStore, info: Mapping[str, Any], tracking_uri: str) -> str:
    """Record the saliency run in MLflow: model version, methods, counts, timings."""
    from histoxai.tracking.explain_log import log_explain_run

    params = {f"explain.{k}": v for k, v in flatten(cfg.explain).items()}
    params.update(
        {
            "explain.resolved_uri": store.manifest.get("model_uri", ""),
            "explain.model_version": store.manifest.get("model_version", ""),
            "explain.variants": json.dumps(store.variants),
            "explain.output": str(store.root),
        }
    )
    metrics: dict[str, float] = {
        "explain/n_patches": len(store.patch_ids),
        "explain/n_pairs": len(store.manifest.get("complete", [])),
    }
    for pair, t in store.manifest.get("timings", {}).items():
        metrics[f"explain/maps_per_s_{pair}"] = t["maps_per_s"]
        metrics[f"explain/seconds_{pair}"] = t["seconds"]
    return log_explain_run(
        tracking_uri, cfg.train.experiment, info, params, metrics, [store.root / "manifest.json"]
    )
