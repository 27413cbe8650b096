import math
import re

import numpy as np
import pytest
import torch

from histoxai.config import TrainConfig
from histoxai.data.datasets import PatchBatches, to_model_input
from histoxai.stages.train import final_metrics
from histoxai.training import evaluate
from histoxai.training.fit import (
    NonFiniteTrainingError,
    captured_stages,
    decorrelation_penalty,
    min_finetune_epochs,
    pooled_channels,
    stage_decorrelation,
)
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
        phantom, tmp_path, "train.epochs=30", "train.patience=2", "train.lr=0.03", "model.targets=[fa]",
        "train.min_epochs=1",
    )  # fmt: skip
    result = train_regressor(cfg, phantom, progress=False)[1]
    epochs = [h["epoch"] for h in result.history]
    losses = [h["val/loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses))
    assert len(epochs) == 30 or epochs[-1] - result.best_epoch == 2
    assert all(math.isfinite(v) for v in losses)
    assert {"train/loss", "val/loss", "val/r2_fa", "val/mse_fa", "val/mae_fa", "lr"} <= set(result.history[0])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"schedule": "cosine", "warmup_epochs": 1, "decay_epochs": 39, "epochs": 40}, 40),
        ({"schedule": "cosine", "warmup_epochs": 2, "decay_epochs": 10, "epochs": 40}, 12),
        ({"schedule": "cosine", "warmup_epochs": 5, "decay_epochs": 60, "epochs": 40}, 40),
        ({"schedule": "none", "epochs": 40}, 1),
        ({"schedule": "cosine", "min_epochs": 7, "epochs": 40}, 7),
        ({"schedule": "none", "min_epochs": 70, "epochs": 40}, 40),
    ],
)
def test_early_stopping_waits_for_the_whole_schedule_by_default(kwargs, expected):
    assert min_finetune_epochs(TrainConfig(**kwargs)) == expected


@pytest.mark.slow
def test_patience_never_cuts_the_cosine_schedule_short(phantom, tmp_path):
    # lr 0.3 without decay makes the validation loss jump: patience 1 would stop at once
    cfg = tiny_config(
        phantom, tmp_path, "train.epochs=6", "train.patience=1", "train.schedule=cosine",
        "train.warmup_epochs=0", "train.decay_epochs=6", "train.initial_lr=0.3", "model.targets=[fa]",
    )  # fmt: skip
    result = train_regressor(cfg, phantom, progress=False)[1]
    assert [h["epoch"] for h in result.history] == list(range(6))
    assert result.history[-1]["lr"] < 0.3 * 0.1  # ran into the tail of the decay
    losses = [h["val/loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses))


@pytest.mark.slow
def test_a_diverging_training_raises_instead_of_returning_a_nan_model(phantom, tmp_path):
    cfg = tiny_config(
        phantom, tmp_path, "train.schedule=none", "train.lr=1e6", "train.epochs=2", "model.targets=[md]"
    )
    seen = []
    with pytest.raises(NonFiniteTrainingError, match=r"(train/loss|val/\w+)=?.*(nan|inf).*lower train.lr"):
        train_regressor(cfg, phantom, on_epoch=lambda e, m: seen.append(m), progress=False)
    assert all(math.isfinite(v) for m in seen for v in m.values())  # nothing non-finite was reported
    assert issubclass(NonFiniteTrainingError, ValueError)  # the CLI prints one line and exits 2


@pytest.mark.slow
def test_train_stage_with_a_diverging_fit_exits_2_and_registers_nothing(
    phantom, tmp_path, monkeypatch, capsys
):
    import yaml
    from mlflow import MlflowClient

    from histoxai.cli import main
    from histoxai.config import to_dict

    cfg = tiny_config(phantom, tmp_path, "train.schedule=none", "train.lr=1e6", "train.epochs=2")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "histoxai train: error: non-finite metrics at" in err and "nothing is saved or registered" in err
    assert re.search(r"train/loss=(nan|inf)", err)  # read at the end of the epoch
    assert not (tmp_path / "models" / cfg.model.registered_name / "model.pt").exists()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert MlflowClient(uri, registry_uri=uri).search_model_versions() == []


def test_decorrelation_penalty_is_one_for_copies_and_near_zero_for_independent_features():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(256, 1, generator=gen)
    copies = torch.cat([base, -2 * base + 1, 3 * base], dim=1)  # one feature up to sign and scale
    assert decorrelation_penalty(copies).item() == pytest.approx(1.0, abs=1e-5)
    independent = torch.randn(256, 8, generator=gen)
    assert decorrelation_penalty(independent).item() < 0.02  # E[r^2] = 1/B for independent features
    # a constant (dead) feature is uncorrelated with every other and its gradient is finite
    dead = torch.cat([copies, torch.full((256, 1), 0.7)], dim=1).requires_grad_(True)
    value = decorrelation_penalty(dead)
    assert value.item() == pytest.approx(6 / 12, abs=1e-5)  # 6 of the 12 ordered pairs correlate fully
    value.backward()
    assert torch.isfinite(dead.grad).all()
    # (B, N, C) tokens pool over N as (B, C, H, W) maps pool over H and W
    maps = torch.randn(2, 4, 3, 5, generator=gen)
    assert torch.allclose(pooled_channels(maps.flatten(2).transpose(1, 2)), pooled_channels(maps), atol=1e-6)


@pytest.mark.slow
def test_the_decorrelation_penalty_decorrelates_every_stages_pooled_channels(phantom, tmp_path):
    def pooled_correlation(decorrelation: float) -> tuple[float, list[dict]]:
        cfg = tiny_config(
            phantom, tmp_path, "model.targets=[cc]", "train.epochs=6", f"train.decorrelation={decorrelation}"
        )
        model, result, _ = train_regressor(cfg, phantom, progress=False)
        assert not any(m._forward_hooks for m in model.modules())  # the fit removed its hooks
        images = torch.as_tensor(phantom.images(phantom.ids("test")[:128])).permute(0, 3, 1, 2)
        x = to_model_input(images, "cpu", channels_last=False)
        with torch.no_grad(), captured_stages(model) as stages:
            model.eval()(x)
        assert len(stages) == 5  # test_resnet: act1, layer1, ..., layer4
        return stage_decorrelation(stages).item(), result.history

    plain, plain_history = pooled_correlation(0.0)
    decorrelated, history = pooled_correlation(4.0)
    assert decorrelated < 0.6 * plain, (plain, decorrelated)  # measured 0.24 -> 0.09
    assert "train/feature_correlation" in history[-1] and "train/feature_correlation" not in plain_history[-1]
    assert history[-1]["train/feature_correlation"] < history[0]["train/feature_correlation"]
