import numpy as np
import pandas as pd
import pytest

from histoxai.evaluation.metrics import (
    flat_metrics,
    per_sample_table,
    per_split_table,
    regression_metrics,
    sample_groups,
    within_sample_r2,
)
from tests.evaluation.helpers import frame

Y = np.array([0.2, 0.5, 0.9, 1.4, 2.0])


def test_perfect_predictions_score_one_and_zero_error():
    m = regression_metrics(Y, Y)
    assert m == {"r2": 1.0, "ev": 1.0, "mse": 0.0, "mae": 0.0, "n": 5}


def test_predicting_the_mean_scores_zero():
    assert regression_metrics(Y, np.full_like(Y, Y.mean()))["r2"] == pytest.approx(0.0, abs=1e-12)


def test_known_values():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    m = regression_metrics(y, y + 1)
    # SS_res = 4, SS_tot = 5
    assert m["r2"] == pytest.approx(0.2)
    assert m["mse"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(1.0)
    m = regression_metrics(y, np.array([0.0, 1.0, 2.0, 1.0]))
    assert m["mse"] == pytest.approx(1.0) and m["mae"] == pytest.approx(0.5)


def test_nan_pairs_are_ignored_and_degenerate_r2_is_nan():
    y = np.array([1.0, np.nan, 3.0, 5.0])
    yhat = np.array([1.0, 2.0, np.nan, 5.0])
    assert regression_metrics(y, yhat)["n"] == 2
    assert np.isnan(regression_metrics(np.ones(4), np.ones(4))["r2"])
    assert regression_metrics([], [])["n"] == 0


def test_per_split_table_scores_each_split_on_its_own_rows():
    pred = pd.concat(
        [
            frame("train", "a", Y, Y + 0.1),
            frame("val", "a", Y, np.full_like(Y, Y.mean())),
            frame("test", "b", Y, Y),
        ],
        ignore_index=True,
    )
    table = per_split_table(pred, ["md"])
    assert list(table.index) == ["train", "val", "test"]
    assert table.at["test", "r2_md"] == 1.0
    assert table.at["val", "r2_md"] == pytest.approx(0.0, abs=1e-12)
    assert table.at["train", "mae_md"] == pytest.approx(0.1)
    assert table.at["train", "n_md"] == 5
    metrics = flat_metrics(table)
    assert metrics["test/r2_md"] == 1.0 and metrics["train/mse_md"] == pytest.approx(0.01)
    assert not any(k.startswith("test/n") for k in metrics)


def test_per_sample_table_has_samples_as_rows_and_in_out_per_target():
    n = len(Y)
    a = frame(["train", "val", "test", "test", "out"], "a", Y, Y)
    b = frame("out", "b", Y, np.full(n, Y.mean()))
    pred = pd.concat([a, b], ignore_index=True)
    pred["y_fa"], pred["yhat_fa"] = pred["y_md"] / 10, pred["y_md"] / 10
    table = per_sample_table(pred, ["md", "fa"])
    assert list(table.index) == ["a", "b"]
    assert list(table.columns[:8]) == [
        "in/r2_md", "in/ev_md", "in/mse_md", "in/mae_md", "out/r2_md", "out/ev_md", "out/mse_md", "out/mae_md",
    ]  # fmt: skip
    assert list(table.columns[-2:]) == ["n_in", "n_out"]
    assert table.at["a", "in/r2_md"] == 1.0 and table.at["a", "n_in"] == 4 and table.at["a", "n_out"] == 1
    assert np.isnan(table.at["b", "in/r2_md"])  # no in-sample patches
    assert table.at["b", "out/r2_md"] == pytest.approx(0.0, abs=1e-12)
    metrics = flat_metrics(per_split_table(pred, ["md"]), table)
    assert metrics["sample/a/in/r2_md"] == 1.0
    assert "sample/b/in/r2_md" not in metrics  # NaN left out


def test_a_sample_the_model_never_trained_on_is_out_of_sample():
    # leave_sample_out: sample b only has test patches
    pred = pd.concat(
        [frame(["train", "val", "test"], "a", Y[:3], Y[:3]), frame("test", "b", Y, Y)], ignore_index=True
    )
    assert list(sample_groups(pred)) == ["in"] * 3 + ["out"] * 5


def test_explained_variance_ignores_a_constant_bias_that_r2_penalises():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    m = regression_metrics(y, y + 1)  # SS_res 4, SS_tot 5; var(residual) 0
    assert m["r2"] == pytest.approx(0.2) and m["ev"] == pytest.approx(1.0)
    yhat = np.array([0.5, 0.5, 2.5, 2.5])  # residual (.5, -.5, .5, -.5): var .25; var(y) 1.25
    m = regression_metrics(y, yhat)
    assert m["ev"] == pytest.approx(1 - 0.25 / 1.25) and m["r2"] == pytest.approx(1 - 1.0 / 5.0)
    from sklearn.metrics import explained_variance_score, r2_score

    rng = np.random.default_rng(0)
    y, yhat = rng.normal(size=50), rng.normal(size=50) + 0.3
    m = regression_metrics(y, yhat)
    assert m["ev"] == pytest.approx(explained_variance_score(y, yhat))
    assert m["r2"] == pytest.approx(r2_score(y, yhat)) and m["ev"] > m["r2"]


def test_within_sample_r2_scores_sample_recognition_zero_and_offsets_nothing():
    samples = np.repeat(["a", "b"], 5)
    y = np.concatenate([Y, Y + 10.0])  # the sample explains almost all pooled variance
    means = np.repeat([Y.mean(), Y.mean() + 10.0], 5)
    shortcut = regression_metrics(y, means, samples)
    assert shortcut["r2"] > 0.95 and shortcut["r2within"] == pytest.approx(0.0, abs=1e-12)
    offset = y + np.repeat([0.5, -0.7], 5)  # right within each sample, wrong offsets
    assert within_sample_r2(y, offset, samples) == pytest.approx(1.0)
    assert regression_metrics(y, offset, samples)["r2"] < 1.0
    flipped = np.concatenate([Y[::-1], Y[::-1] + 10.0])  # the sign flip inside each sample
    assert within_sample_r2(y, flipped, samples) < -1
    assert np.isnan(within_sample_r2(y[:2], y[:2], np.array(["a", "b"])))  # nothing varies within


def test_per_split_table_has_within_sample_r2():
    pred = pd.concat([frame("test", "a", Y, Y + 1.0), frame("test", "b", Y + 5, Y + 5)], ignore_index=True)
    table = per_split_table(pred, ["md"])
    assert table.at["test", "r2within_md"] == pytest.approx(1.0)
    assert table.at["test", "r2_md"] < 1.0 and table.at["test", "ev_md"] < 1.0
