"""One training session on a patch store: statistics, model, loaders, fit, predictions.

``train_regressor`` is what ``histoxai train`` and the Optuna tuner call; it touches no
files and no tracking server (the caller logs through ``on_epoch``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from histoxai.config import Config
from histoxai.data.datasets import PatchBatches, target_matrix
from histoxai.data.store import PatchStore, split_column
from histoxai.models.regressor import Regressor, build_regressor
from histoxai.stain import fit_macenko, pick_reference
from histoxai.training.distributed import Group
from histoxai.training.fit import EpochCallback, FitResult, cpu_threads, fit, predict
from histoxai.training.runtime import resolve_device


def seed_configs(cfg: Config) -> list[Config]:
    """One config per seed of ``base.seed_list()`` (``base.seed`` set to it), the seed of
    the registered model first."""
    return [
        dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, seed=s)) for s in cfg.base.seed_list()
    ]


def target_stats(
    store: PatchStore, ids: np.ndarray, targets: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Per-target mean and standard deviation over ``ids`` (NaN left out; std 0 -> 1).

    Raises:
        ValueError: a target has no value among ``ids``.
    """
    y = target_matrix(store, ids, targets)
    empty = [t for j, t in enumerate(targets) if not np.isfinite(y[:, j]).any()]
    if empty:
        raise ValueError(
            f"model.targets: {empty} have no values in the training patches of {store.root} "
            f"(store targets: {store.targets})"
        )
    mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def stain_reference(
    store: PatchStore, ids: np.ndarray, seed: int, max_candidates: int = 256
) -> tuple[dict, int]:
    """Fit the Macenko reference on the most stained of up to ``max_candidates`` patches.

    Returns:
        The reference (``he_ref``, ``max_c_ref``) and the reference patch id.
    """
    rng = np.random.default_rng(seed)
    cand = np.sort(rng.choice(ids, size=min(len(ids), max_candidates), replace=False))
    images = store.images(cand)
    best = pick_reference(images)
    return fit_macenko(images[best]).reference(), int(cand[best])


def train_regressor(
    cfg: Config,
    store: PatchStore,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    group: Group | None = None,
) -> tuple[Regressor, FitResult, dict]:
    """Build and fit the regressor of ``cfg`` on the ``cfg.data.split.scheme`` split.

    Args:
        cfg: the full config (``model``, ``train``, ``data.split.scheme``, ``base.seed``).
        store: the patch store.
        on_epoch: per-epoch callback ``(epoch, metrics)`` (logging, pruning).
        progress: tqdm bars.
        group: data-parallel ranks (every rank calls this; each loads its share of the
            train and val patches per epoch and all end with the same weights).

    Returns:
        The model (best weights, eval mode), the fit result, and facts to log
        (``stain_reference_patch`` when stain normalisation is on).
    """
    scheme, targets = cfg.data.split.scheme, cfg.model.targets
    missing = [t for t in targets if t not in store.targets]
    if missing:
        raise ValueError(
            f"model.targets={list(targets)}: {missing} not in the patch store {store.root} "
            f"(it has {store.targets})"
        )
    group = group or Group()
    train_ids, val_ids = store.ids("train", scheme), store.ids("val", scheme)
    if len(train_ids) < cfg.train.batch_size * group.world or len(val_ids) == 0:
        raise ValueError(
            f"split {scheme!r} of {store.root} has {len(train_ids)} train and {len(val_ids)} val patches; "
            f"need at least train.batch_size={cfg.train.batch_size} train patches per process "
            f"({group.world}) and 1 val patch"
        )
    mean, std = target_stats(store, train_ids, targets)
    facts: dict = {}
    reference = None
    if cfg.train.stain_normalize:
        reference, facts["stain_reference_patch"] = stain_reference(store, train_ids, cfg.base.seed)
    torch.manual_seed(cfg.base.seed)
    model = build_regressor(cfg.model, mean, std, reference)
    share = {
        "workers": cfg.train.num_workers,
        "rank": group.rank,
        "world": group.world,
        "pin": resolve_device(cfg.train.device).type == "cuda",  # async host-to-device copies
    }
    train = PatchBatches(
        store,
        train_ids,
        targets,
        cfg.train.batch_size,
        shuffle=True,
        seed=cfg.base.seed,
        drop_last=True,
        **share,
    )
    val = PatchBatches(store, val_ids, targets, eval_batch_size(cfg), **share)
    result = fit(
        model, train, val, cfg.train, cfg.base.seed, cfg.model.loss_weights, on_epoch, progress, group
    )
    return model, result, facts


def eval_batch_size(cfg: Config) -> int:
    """Inference batch size: twice the training batch (no gradients kept)."""
    return 2 * cfg.train.batch_size


def predict_store(model: Regressor, store: PatchStore, cfg: Config, progress: bool = False) -> pd.DataFrame:
    """Predictions for every patch of the store (all splits, ``out`` included).

    Computed in fp32 whatever ``train.precision`` is, so they equal what every consumer of
    the checkpoint or the registered model gets from ``model(x)``.

    Returns:
        One row per patch in ``patch_id`` order: ``patch_id, sample, row, col, split``
        (of ``cfg.data.split.scheme``) and per target ``y_<t>``, ``yhat_<t>`` (real units).
    """
    device = resolve_device(cfg.train.device)
    ids = store.index["patch_id"].to_numpy()
    batches = PatchBatches(store, ids, model.targets, eval_batch_size(cfg), workers=cfg.train.num_workers)
    with cpu_threads(cfg.train.threads):
        yhat, order = predict(model, batches, device, None, progress)
    if not np.array_equal(order, ids):
        raise RuntimeError("predictions came back out of patch order")
    index = store.index
    frame = pd.DataFrame(
        {
            "patch_id": ids.astype(np.int64),
            "sample": index["sample"].astype(str).to_numpy(),
            "row": index["row"].to_numpy(),
            "col": index["col"].to_numpy(),
            "split": index[split_column(cfg.data.split.scheme)].astype(str).to_numpy(),
        }
    )
    y = target_matrix(store, ids, model.targets)
    for j, t in enumerate(model.targets):
        frame[f"y_{t}"] = y[:, j].astype(np.float64)
        frame[f"yhat_{t}"] = yhat[:, j].astype(np.float64)
    return frame
