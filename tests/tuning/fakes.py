"""Stand-in trainers for tuning tests (``tune.trainer=tests.tuning.fakes:...``).

They follow the ``tuning.objective.TrainFn`` contract without torch: the validation R2
is a known function of the sampled learning rate, ``convnext_atto`` "does not fit" the
patch size, and a dummy ``model/model.pt`` artifact is logged so a champion can be set.
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.pt").write_bytes(b"fake")
    studies.client(tracking_uri).log_artifact(run_id, str(out_dir / "model.pt"), "model")
    return metrics


def nan_train(cfg, out_dir, run_id, tracking_uri, on_epoch):
    on_epoch(0, {"train/loss": float("nan"), "val/r2_md": 0.1, "val/r2_fa": 0.1})
    return {}
