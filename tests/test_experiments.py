"""`dvc exp run -S train.lr=...`: an experiment with one param changed, as the README shows."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow import MlflowClient

from tests.test_pipeline import clone, run  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow


def test_dvc_exp_run_sets_a_param_and_trains_with_it(clone):  # noqa: F811
    dest, env = clone
    out = run(["dvc", "exp", "run", "-S", "train.lr=0.002", "-n", "lr-2e-3", "train@cc"], dest, env)
    assert "lr-2e-3" in out
    assert yaml.safe_load((dest / "params.yaml").read_text())["train"]["lr"] == 0.002
    info = json.loads((dest / "models/histoxai-cc/run.json").read_text())
    params = MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.params
    assert float(params["train.lr"]) == 0.002
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], dest, env)
    assert "lr-2e-3" in shown and "0.002" in shown
