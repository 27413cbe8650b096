"""Stand-in trainers for tuning tests (``tune.trainer=tests.tuning.fakes:...``).

They follow the ``histoxai.tuning.objective.TrainFn`` contract without torch: the validation R2
is a known function of the sampled learning rate, ``convnext_atto`` "does not fit" the
patch size, and an empty logged model is attached to the run so a champion can be set.
"""

from __future__ import annotations

import os
import time

from histoxai.tracking import studies


def r2_of(lr: float) -> float:
    return min(lr * 50.0, 0.9)


def quick_train(cfg, out_dir, run_id, tracking_uri, on_epoch):
    if cfg.model.backbone == "convnext_atto":
        raise RuntimeError("Calculated padded input size per channel: (1 x 1). Kernel size: (2 x 2).")
    metrics = {}
    for epoch in range(cfg.train.epochs):
        time.sleep(float(os.environ.get("FAKE_EPOCH_S", "0")))
        metrics = {
            "train/loss": 1.0 / (epoch + 1),
            "val/loss": 0.5,
            "val/r2_md": r2_of(cfg.train.lr),
            "val/r2_fa": 0.0,
        }
        on_epoch(epoch, metrics)
    c = studies.client(tracking_uri)  # an (empty) logged model, as log_trial_model leaves it
    model = c.create_logged_model(c.get_run(run_id).info.experiment_id, source_run_id=run_id, name="model")
    c.set_tag(run_id, studies.MODEL_ID_TAG, model.model_id)
    c.set_tag(run_id, "histoxai.targets", ",".join(cfg.model.targets))
    return metrics


def nan_train(cfg, out_dir, run_id, tracking_uri, on_epoch):
    on_epoch(0, {"train/loss": float("nan"), "val/r2_md": 0.1, "val/r2_fa": 0.1})
    return {}
