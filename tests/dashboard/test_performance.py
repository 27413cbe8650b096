"""R² tables for the Main page."""

from __future__ import annotations

import numpy as np

from histoxai.dashboard.performance import r2, r2_from_meta, r2_tables


def test_report_metrics_become_split_and_sample_tables(catalog):
    splits, samples = r2_tables(catalog.metrics["mdfa"])
    assert list(splits.index) == ["val", "test", "ceiling"]
    assert list(splits.columns) == ["md", "md (baseline)", "fa"]
    assert splits.loc["test", "md"] == 0.81 and splits.loc["test", "md (baseline)"] == 0.42
    assert np.isnan(splits.loc["val", "fa"]) and splits.loc["ceiling", "md"] == 0.97
    assert samples.loc["s1", "md in"] == 0.79 and samples.loc["s2", "md out"] == 0.61
    assert "md in (baseline)" not in samples.columns


def test_r2_from_the_explained_patches(catalog):
    meta = catalog.sources["mdfa"].meta
    splits, samples = r2_from_meta(meta)
    assert list(splits.index) == ["train", "val", "test"] and set(splits.columns) == {"md", "fa"}
    test = meta[(meta["target"] == "md") & (meta["split"] == "test")]
    assert splits.loc["test", "md"] == r2(test["y"].to_numpy(), test["y_hat"].to_numpy())
    assert list(samples.index) == ["s1", "s2"]


def test_r2_is_one_for_perfect_predictions_and_nan_when_undefined():
    y = np.array([1.0, 2.0, 3.0])
    assert r2(y, y) == 1.0
    assert r2(y, y + 1.0) == 1.0 - 3.0 / 2.0
    assert np.isnan(r2(np.ones(3), y))
