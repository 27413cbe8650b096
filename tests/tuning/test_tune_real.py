"""A tiny real study: tiny patches, a tiny backbone, one epoch, the real training session."""

from __future__ import annotations

from functools import partial

import optuna
import pytest
import torch
from optuna.trial import TrialState

from histoxai.config import Config, apply_overrides
from histoxai.data.splits import assign_splits
from histoxai.data.store import write_store
from histoxai.tuning.launcher import launch
from histoxai.tuning.study import open_storage
from tests.conftest import make_blocks
from tests.tuning.test_launcher import PruneTrial

pytestmark = pytest.mark.slow

SPACE = """
fixed: {model.targets: [md], model.registered_name: tiny-real-md, model.feature_width: 8, model.hidden_width: 16}
params:
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
  model.backbone: {type: categorical, choices: [resnet10t, convnext_atto]}
enqueue:
  - {model.backbone: resnet10t}
  - {model.backbone: convnext_atto}
  - {model.backbone: resnet10t}
"""


def test_tiny_real_study_fails_the_deep_backbone_prunes_and_registers_a_loadable_champion(
    tmp_path, mlflow_uri
):
    base = apply_overrides(Config(), {"base.patches_dir": str(tmp_path / "patches")})
    write_store(
        tmp_path / "patches",
        make_blocks(n_samples=2, grid=6, size=16),
        {"source": "test"},
        partial(assign_splits, cfg=base.data.split, seed=0),
    )
    (tmp_path / "space.yaml").write_text(SPACE)
    cfg = apply_overrides(
        base,
        {
            "tune.space": str(tmp_path / "space.yaml"),
            "tune.dir": str(tmp_path / "optuna"),
            "tune.study_name": "tiny-real",
            "tune.n_trials": 3,
            "train.epochs": 1,
            "train.batch_size": 8,
            "train.device": "cpu",
            # fp32 and a small LR: one CI run saw resnet10t diverge at lr 3.6e-3 in bf16
            "train.precision": "fp32",
            "data.patch_size_px": 16,
        },
    )
    summary = launch(cfg, mlflow_uri, pruner=PruneTrial(2))

    study = optuna.load_study(study_name="tiny-real", storage=open_storage(cfg.tune))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    assert "convnext_atto does not fit 16 px patches" in study.trials[1].user_attrs["fail_reason"]
    assert summary["best"]["number"] == 0 and "val/r2_md" in summary["best"]["val_metrics"]

    from histoxai.tracking import load_registered_model

    model, info = load_registered_model("models:/tiny-real-md@champion", mlflow_uri)
    assert info["run_id"] == study.trials[0].user_attrs["mlflow_run_id"]
    assert info["tags"]["targets"] == "md" and info["tags"]["optuna.trial"] == "0"
    with torch.no_grad():
        out = model(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
