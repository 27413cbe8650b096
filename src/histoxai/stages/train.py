"""Train a regressor on the patch store, track the run in MLflow, register the model.

Run::

    histoxai train                                           # model.targets from params.yaml
    histoxai train --set model.targets=[cc] --set model.registered_name=histoxai-cc
    histoxai train --params params-gpu.yaml                  # the published full-scale setting
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 histoxai train  # another tracking server

Writes ``<base.models_dir>/<model.registered_name>/``: ``model.pt`` (load with
``histoxai.models.load_checkpoint``), ``predictions.parquet`` (every patch: ``y_<t>``,
``yhat_<t>``) and ``run.json`` (run id, tracking URI, registered version). The run holds
the resolved config (params + ``config.yaml``), dataset lineage, per-epoch metrics, the
final ``split/metric_target`` metrics of the best checkpoint and the model, registered
with alias ``candidate`` (and ``champion`` if there is none yet; see ``histoxai promote``).
Under ``mlflow run`` the run started by MLflow (``$MLFLOW_RUN_ID``) is used.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from histoxai.config import Config, load_config

# torch, timm and mlflow are imported inside the functions so `histoxai --help` stays fast

FINAL_SPLITS = ("train", "test", "out")  # val was logged per epoch, at the best epoch too


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overrides",
        dest="overrides_text",
        default="",
        metavar="'KEY=VALUE ...'",
        help="more overrides in one space-separated string (for MLproject: -P set='model.targets=[cc]')",
    )


def run(cfg: Config, args: argparse.Namespace | None = None) -> dict:
    """Train, track and register as configured; returns the ``run.json`` contents."""
    from histoxai.tracking import resolve_tracking_uri

    extra = shlex.split(getattr(args, "overrides_text", "") or "") if args is not None else []
    if extra:
        cfg = load_config(args.params, [*args.overrides, *extra])
    tracking_uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd())
    return train(cfg, Path.cwd(), tracking_uri, run_id=os.environ.get("MLFLOW_RUN_ID") or None)


def train(
    cfg: Config, repo_root: str | Path, tracking_uri: str, run_id: str | None = None, progress: bool = True
) -> dict:
    """The stage body with explicit inputs (tests call this).

    Args:
        cfg: resolved config.
        repo_root: where ``dvc.lock`` is looked up (dataset hash).
        tracking_uri: MLflow tracking URI.
        run_id: resume this MLflow run instead of starting one.
        progress: tqdm bars.
    """
    import numpy as np

    from histoxai.data.store import PatchStore
    from histoxai.io import atomic_path, write_json
    from histoxai.models.checkpoint import save_checkpoint
    from histoxai.tracking import data_lineage, log_regressor, start_run
    from histoxai.training.session import predict_store, seed_configs, train_regressor

    cfg, *more_seeds = seed_configs(cfg)  # base.seeds: the first is the registered model
    store = PatchStore(cfg.base.patches_dir)
    lineage = {k.replace("data.", "dataset."): v for k, v in data_lineage(store.root, repo_root).items()}
    targets, scheme = cfg.model.targets, cfg.data.split.scheme
    out_dir = Path(cfg.base.models_dir) / cfg.model.registered_name
    tags = {"targets": ",".join(targets), "data_hash": lineage["dataset.hash"], "split_scheme": scheme}
    with start_run(
        tracking_uri,
        cfg.train.experiment,
        run_name=cfg.model.registered_name,
        run_id=run_id,
        tags={f"histoxai.{k}": v for k, v in tags.items()},
    ) as run:
        run.log_config(cfg)
        run.log_params(lineage)
        run.log_dataset(store.index, "patches", str(store.root.resolve()), lineage["dataset.hash"])
        model, result, facts = train_regressor(
            cfg,
            store,
            on_epoch=lambda epoch, metrics: run.log_metrics(metrics, step=epoch),
            progress=progress,
        )
        if facts:
            run.log_params(facts)
        pred = predict_store(model, store, cfg, progress=progress)
        final = final_metrics(pred, targets)
        final.update({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss})
        final["fit_seconds"] = result.seconds
        run.log_metrics(final, step=result.best_epoch)
        run.set_tags({"histoxai.device": result.device, "histoxai.precision": result.precision})
        save_checkpoint(out_dir / "model.pt", model, cfg.model, {"run_id": run.run_id, **tags})
        with atomic_path(out_dir / "predictions.parquet") as tmp:
            pred.to_parquet(tmp, index=False)
        run.log_artifacts([out_dir / "predictions.parquet"], "predictions")
        example_ids = store.ids("val", scheme)[:1]  # one patch: the example is stored as JSON
        example = store.images(example_ids).transpose(0, 3, 1, 2).astype(np.float32) / 255
        for seed_cfg in more_seeds:  # the same model with further seeds, for mean and spread
            final.update(train_seed(seed_cfg, store, out_dir, progress))
        run.log_metrics({k: v for k, v in final.items() if k.startswith("seed/")})
        registered = log_regressor(run, model, cfg.model.registered_name, example, tags)
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
            "aliases": registered["aliases"],
            "seeds": list(cfg.base.seed_list()),
        }
        write_json(out_dir / "run.json", info)
        run.log_artifacts([out_dir / "run.json"])
    summary = " ".join(f"test/r2_{t}={final.get(f'test/r2_{t}', float('nan')):.3f}" for t in targets)
    print(
        f"trained {info['model_uri']} (aliases {registered['aliases']}) in {result.seconds:.0f}s on "
        f"{result.device}/{result.precision}: best epoch {result.best_epoch}, {summary}; wrote {out_dir}"
    )
    return info


def train_seed(cfg: Config, store, out_dir: Path, progress: bool) -> dict[str, float]:
    """Train with ``cfg.base.seed``; write ``<out_dir>/seeds/<seed>/{model.pt,
    predictions.parquet}``; return its final metrics as ``seed/<seed>/<split>/<m>_<t>``."""
    from histoxai.io import atomic_path
    from histoxai.models.checkpoint import save_checkpoint
    from histoxai.training.session import predict_store, train_regressor

    seed = cfg.base.seed
    model, _, _ = train_regressor(cfg, store, progress=progress)
    pred = predict_store(model, store, cfg, progress=progress)
    folder = out_dir / "seeds" / str(seed)
    save_checkpoint(folder / "model.pt", model, cfg.model, {"seed": str(seed)})
    with atomic_path(folder / "predictions.parquet") as tmp:
        pred.to_parquet(tmp, index=False)
    return {f"seed/{seed}/{k}": v for k, v in final_metrics(pred, cfg.model.targets).items()}


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
