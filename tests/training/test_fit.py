import math

import numpy as np
import pytest
import torch

from histoxai.data.datasets import PatchBatches
from histoxai.stages.train import final_metrics
from histoxai.training import evaluate
from histoxai.training.runtime import resolve_precision
from histoxai.training.session import eval_batch_size, predict_store, train_regressor
from tests.training.conftest import tiny_config


@pytest.mark.slow
def test_tiny_run_learns_to_count_nuclei_on_held_out_patches(phantom, tmp_path):
    cfg = tiny_config(phantom, tmp_path, "model.targets=[cc]")
    model, result, _ = train_regressor(cfg, phantom, progress=False)
    pred = predict_store(model, phantom, cfg)
    metrics = final_metrics(pred, ("cc",))
    assert metrics["test/r2_cc"] >= 0.5, metrics
    # the kept weights are the best epoch's: re-evaluating gives its validation loss
    val = PatchBatches(phantom, phantom.ids("val"), ("cc",), eval_batch_size(cfg))
    cpu = torch.device("cpu")
    again = evaluate(model, val, "val", cpu, resolve_precision(cfg.train.precision, cpu))
    best = min(h["val/loss"] for h in result.history)
    assert again["val/loss"] == pytest.approx(best, rel=1e-5) == pytest.approx(result.best_val_loss, rel=1e-5)
    assert set(pred.columns) == {"patch_id", "sample", "row", "col", "split", "y_cc", "yhat_cc"}
    assert len(pred) == len(phantom) and pred["yhat_cc"].notna().all()


@pytest.mark.slow
def test_same_seed_same_metrics_and_another_seed_differs(phantom, tmp_path):
    def history(seed: int) -> list[dict]:
        cfg = tiny_config(
            phantom, tmp_path, "train.epochs=2", f"base.seed={seed}", "train.augment.small_rotation_deg=5"
        )
        return train_regressor(cfg, phantom, progress=False)[1].history

    first = history(0)
    assert first == history(0)
    assert first != history(1)


@pytest.mark.slow
def test_frozen_phase_trains_only_the_heads_then_everything(phantom, tmp_path, monkeypatch):
    import histoxai.training.session as session

    cfg = tiny_config(phantom, tmp_path, "train.frozen_epochs=2", "train.epochs=1", "model.targets=[md]")
    built, initial, snapshots = [], {}, []

    def build(*args, **kwargs):
        built.append(session.build_regressor.__wrapped__(*args, **kwargs))
        initial.update(_state(built[0]))
        return built[0]

    build.__wrapped__ = session.build_regressor
    monkeypatch.setattr(session, "build_regressor", build)
    result = train_regressor(
        cfg, phantom, on_epoch=lambda e, m: snapshots.append(_state(built[0])), progress=False
    )[1]
    assert [h["phase"] for h in result.history] == ["frozen", "frozen", "finetune"]
    backbone = [k for k in initial if k.startswith("backbone.")]
    heads = [k for k in initial if k.startswith("heads.") and "weight" in k]
    for snap in snapshots[:2]:  # frozen: backbone (incl. batch-norm statistics) untouched, heads trained
        assert all(torch.equal(snap[k], initial[k]) for k in backbone)
        assert any(not torch.equal(snap[k], initial[k]) for k in heads)
    assert any(not torch.equal(snapshots[2][k], initial[k]) for k in backbone if "weight" in k)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_early_stopping_waits_patience_epochs_after_the_best(phantom, tmp_path):
    cfg = tiny_config(
        phantom, tmp_path, "train.epochs=30", "train.patience=2", "train.lr=0.03", "model.targets=[fa]"
    )
    result = train_regressor(cfg, phantom, progress=False)[1]
    epochs = [h["epoch"] for h in result.history]
    losses = [h["val/loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses))
    assert len(epochs) == 30 or epochs[-1] - result.best_epoch == 2
    assert all(math.isfinite(v) for v in losses)
    assert {"train/loss", "val/loss", "val/r2_fa", "val/mse_fa", "val/mae_fa", "lr"} <= set(result.history[0])
