"""Train, track, register and write the model directory, all or nothing.

The model directory (``model.pt``, ``predictions.parquet``, ``run.json``) is built in a
temporary sibling and renamed into place in one step, after the new registry version is
logged (tagged ``pending``, no alias) and before its aliases are set. So:

- a training whose loss, predictions or metrics are not finite raises
  :class:`TrainingFailed` before anything is registered or written;
- a failed or killed run leaves the previous model directory intact and no alias moved;
- the next run (holding the directory's lock) deletes a pending version a killed run
  left behind, or publishes it when its directory was already swapped in, and ends the
  killed run (FAILED or FINISHED) instead of leaving it RUNNING.

Under ``torchrun`` (a :class:`~histoxai.training.distributed.Group` of several ranks)
every rank trains (each seed of ``base.seeds`` in turn, data-parallel), but only rank 0
touches the tracking server, the registry and the model directory; the others wait for
it at a barrier and return ``{}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from histoxai.config import Config
from histoxai.data.store import PatchStore
from histoxai.errors import UserError
from histoxai.io import atomic_path, clean_leftovers, output_lock, write_json
from histoxai.training.distributed import Group

FINAL_SPLITS = ("train", "test", "out")  # val was logged per epoch, at the best epoch too


class TrainingFailed(UserError, ValueError):
    """The fit diverged: a loss, prediction or metric is not finite. Nothing was registered."""


def train_and_publish(
    cfg: Config,
    repo_root: str | Path,
    tracking_uri: str,
    run_id: str | None = None,
    progress: bool = True,
    group: Group | None = None,
) -> dict:
    """Train ``cfg``'s model, log the run, register it and commit its model directory.

    Args:
        cfg: resolved config.
        repo_root: where ``dvc.lock`` is looked up (dataset hash).
        tracking_uri: MLflow tracking URI.
        run_id: resume this MLflow run instead of starting one (``mlflow run``).
        progress: tqdm bars.
        group: data-parallel ranks (default: this process alone).

    Returns:
        The ``run.json`` contents (``{}`` on ranks other than 0).

    Raises:
        TrainingFailed: non-finite loss, predictions or metrics (nothing registered).
        OutputLockedError: another process is writing the same model directory.
    """
    from histoxai.models.backbones import check_backbone

    store = PatchStore(cfg.base.patches_dir)  # verifies itself: a damaged file is named at once
    check_backbone(cfg.model.backbone, store.patch_size)  # before the run or any work
    group = group or Group()
    if not group.is_main:
        from histoxai.training.session import seed_configs, train_regressor

        for seed_cfg in seed_configs(cfg):  # rank 0 trains the same seeds in the same order
            train_regressor(seed_cfg, store, progress=False, group=group)
        group.barrier()
        return {}
    out_dir = Path(cfg.base.models_dir) / cfg.model.registered_name
    with output_lock(out_dir):
        clean_leftovers(out_dir)
        recover(cfg, tracking_uri, out_dir)
        info = _train(cfg, store, Path(repo_root), tracking_uri, out_dir, run_id, progress, group)
    group.barrier()
    return info


def recover(cfg: Config, tracking_uri: str, out_dir: Path) -> dict:
    """Finish or undo what a killed training of this model left in the registry and runs."""
    from histoxai.tracking.registry import recover_registrations
    from histoxai.tracking.runs import TrackedRun, end_dead_runs, run_is_dead

    committed = _read_json(out_dir / "run.json")
    client = TrackedRun("", "", tracking_uri).client
    name = cfg.model.registered_name
    done = recover_registrations(client, name, committed.get("model_version"), run_is_dead)
    ended = end_dead_runs(tracking_uri, cfg.train.experiment, name, committed.get("run_id"))
    done["failed_runs"] += [run for run, status in ended.items() if status == "FAILED"]
    done["finished_runs"] = [run for run, status in ended.items() if status == "FINISHED"]
    if any(done.values()):
        print(f"train: cleaned up after a killed run: {done}")
    return done


def _train(cfg, store, repo_root, tracking_uri, out_dir, run_id, progress, group) -> dict:
    from histoxai.data.provenance import file_sha256, store_fingerprint
    from histoxai.models.checkpoint import save_checkpoint
    from histoxai.tracking import data_lineage, start_run
    from histoxai.tracking.registry import aliases_to_publish, publish_version, register_regressor
    from histoxai.tracking.runs import process_tags
    from histoxai.training.session import predict_store, seed_configs, train_regressor

    cfg, *more_seeds = seed_configs(cfg)  # base.seeds: the first is the registered model
    lineage = {k.replace("data.", "dataset."): v for k, v in data_lineage(store.root, repo_root).items()}
    targets, scheme, name = cfg.model.targets, cfg.data.split.scheme, cfg.model.registered_name
    tags = {"targets": ",".join(targets), "data_hash": lineage["dataset.hash"], "split_scheme": scheme}
    facts = {**tags, "patch_size_px": str(store.patch_size), "index_sha256": store_fingerprint(store)}
    run_tags = {**{f"histoxai.{k}": v for k, v in tags.items()}, **process_tags()}
    with start_run(tracking_uri, cfg.train.experiment, run_name=name, run_id=run_id, tags=run_tags) as run:
        run.log_config(cfg)
        run.log_params(lineage)
        run.log_dataset(store.index, "patches", str(store.root.resolve()), lineage["dataset.hash"])
        on_epoch = lambda epoch, metrics: run.log_metrics(metrics, step=epoch)  # noqa: E731
        model, result, extra = train_regressor(cfg, store, on_epoch, progress, group)
        if extra:
            run.log_params(extra)
        pred = predict_store(model, store, cfg, progress=progress)
        final = final_metrics(pred, targets)
        final.update({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss})
        check_finite(result, pred, final, targets)
        final["fit_seconds"] = result.seconds
        run.log_metrics(final, step=result.best_epoch)
        run.set_tags({"histoxai.device": result.device, "histoxai.precision": result.precision})
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            save_checkpoint(tmp / "model.pt", model, cfg.model, {"run_id": run.run_id, **facts})
            pred.to_parquet(tmp / "predictions.parquet", index=False)
            run.log_artifacts([tmp / "predictions.parquet"], "predictions")
            example = store.images(store.ids("val", scheme)[:1])  # one patch: stored as JSON
            example = example.transpose(0, 3, 1, 2).astype(np.float32) / 255
            for seed_cfg in more_seeds:  # the same model with further seeds, for mean and spread
                final.update(train_seed(seed_cfg, store, tmp, progress, group))
            run.log_metrics({k: v for k, v in final.items() if k.startswith("seed/")})
            registered = register_regressor(run, model, name, example, facts)
            info = {
                "run_id": run.run_id,
                "experiment_id": run.experiment_id,
                "tracking_uri": tracking_uri,
                "model_name": registered["model_name"],
                "model_version": registered["model_version"],
                "model_uri": registered["model_uri"],
                "targets": list(targets),
                "split_scheme": scheme,
                "data_hash": lineage["dataset.hash"],
                "aliases": aliases_to_publish(run.client, name),
                "patch_size_px": store.patch_size,
                "index_sha256": facts["index_sha256"],
                "predictions_sha256": file_sha256(tmp / "predictions.parquet"),
                "seeds": list(cfg.base.seed_list()),
            }
            write_json(tmp / "run.json", info)
            run.log_artifacts([tmp / "run.json"])
        # The directory is committed; now the registry may point at it.
        info["aliases"] = publish_version(run.client, name, registered["model_version"])
    summary = " ".join(f"test/r2_{t}={final.get(f'test/r2_{t}', float('nan')):.3f}" for t in targets)
    print(
        f"trained {info['model_uri']} (aliases {info['aliases']}) in {result.seconds:.0f}s on "
        f"{result.device}/{result.precision}: best epoch {result.best_epoch}, {summary}; wrote {out_dir}"
    )
    return info


def check_finite(result, pred, final: dict[str, float], targets) -> None:
    """Raise :class:`TrainingFailed` unless the best epoch exists, its validation loss, every
    prediction and every error metric (MSE, MAE) are finite. R² may be NaN legitimately
    (a split with constant targets) and is not checked."""
    bad = [] if result.best_epoch >= 0 and math.isfinite(result.best_val_loss) else ["best_val_loss"]
    bad += [f"yhat_{t}" for t in targets if not np.isfinite(pred[f"yhat_{t}"].to_numpy()).all()]
    bad += [k for k, v in final.items() if ("/mse_" in k or "/mae_" in k) and not math.isfinite(v)]
    if bad:
        raise TrainingFailed(
            f"training diverged: {', '.join(bad)} not finite (best epoch {result.best_epoch}); "
            "nothing was registered. Lower train.lr or use a warmup schedule"
        )


def train_seed(
    cfg: Config, store: PatchStore, out_dir: Path, progress: bool, group: Group | None = None
) -> dict[str, float]:
    """Train with ``cfg.base.seed``; write ``<out_dir>/seeds/<seed>/{model.pt,
    predictions.parquet}``; return its final metrics as ``seed/<seed>/<split>/<m>_<t>``."""
    from histoxai.models.checkpoint import save_checkpoint
    from histoxai.training.session import predict_store, train_regressor

    seed = cfg.base.seed
    model, result, _ = train_regressor(cfg, store, progress=progress, group=group)
    pred = predict_store(model, store, cfg, progress=progress)
    metrics = final_metrics(pred, cfg.model.targets)
    check_finite(result, pred, metrics, cfg.model.targets)
    folder = out_dir / "seeds" / str(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "model.pt", model, cfg.model, {"seed": str(seed)})
    pred.to_parquet(folder / "predictions.parquet", index=False)
    return {f"seed/{seed}/{k}": v for k, v in metrics.items()}


def final_metrics(pred, targets) -> dict[str, float]:
    """``split/metric_target`` of a predictions table for the train, test and out splits."""
    from histoxai.training.metrics import regression_metrics

    out: dict[str, float] = {}
    for split in FINAL_SPLITS:
        part = pred[pred["split"] == split]
        if len(part) >= 2:
            y = part[[f"y_{t}" for t in targets]].to_numpy()
            yhat = part[[f"yhat_{t}" for t in targets]].to_numpy()
            out.update(regression_metrics(yhat, y, targets, split))
    return out


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
