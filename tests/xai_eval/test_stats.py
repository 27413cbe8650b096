import numpy as np
import pandas as pd
import pytest

from histoxai.config import XaiEvalConfig
from histoxai.xai_eval import stats
from histoxai.xai_eval.ranking import verdict


def test_cluster_bootstrap_resamples_samples_not_patches():
    """Two samples with constant values 0 and 1: a draw holds 0, 1 or 2 copies of each
    sample, so the bootstrap means are exactly 0, 0.5 or 1 (a patch bootstrap would give
    values in between)."""
    draws, codes = stats.sample_weights(np.array(["a"] * 5 + ["b"] * 5), 400, seed=0)
    means = stats.boot_means(np.array([0.0] * 5 + [1.0] * 5), codes, draws)
    assert set(np.round(means, 12)) <= {0.0, 0.5, 1.0}
    lo, hi = stats.interval(means, 0.95)
    assert lo == 0.0 and hi == 1.0


def test_bootstrap_is_seeded_and_ignores_nan():
    s = np.repeat(["a", "b", "c"], 4)
    v = np.arange(12, dtype=float)
    v[3] = np.nan
    d1, c1 = stats.sample_weights(s, 50, 1)
    d2, c2 = stats.sample_weights(s, 50, 1)
    a, b = stats.boot_means(v, c1, d1), stats.boot_means(v, c2, d2)
    assert np.array_equal(a, b) and np.isfinite(a).all()


def test_p_top_splits_ties_and_follows_the_direction():
    boots = {"a": np.array([1.0, 2.0, 3.0, 3.0]), "b": np.array([2.0, 1.0, 0.0, 3.0])}
    assert stats.p_top(boots, higher=True) == {"a": pytest.approx(0.625), "b": pytest.approx(0.375)}
    assert stats.p_top(boots, higher=False) == {"a": pytest.approx(0.375), "b": pytest.approx(0.625)}


def test_paired_difference_and_normalisation():
    out = stats.paired(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0]), 0.5)
    assert out["p_greater"] == 1.0 and out["diff"] == pytest.approx(2.0)
    assert stats.normalised(np.array(0.75), np.array(0.5), np.array(1.0)) == pytest.approx(0.5)
    assert np.isnan(stats.normalised(np.array(0.5), np.array(0.5), np.array(0.5)))


def table(rows):
    return pd.DataFrame(
        [{"method": m, "metric": "mass_accuracy", "mean": mean, "lo": lo, "hi": hi, "norm_mean": norm, "p_top": p}
         for m, mean, lo, hi, norm, p in rows]
    )  # fmt: skip


ROWS = {m: {"kind": "method", "resolution": [32, 32]} for m in ("a", "b", "c")}
CFG = XaiEvalConfig()


def test_overlapping_intervals_are_a_tie_and_names_never_break_it():
    t = table(
        [("b", 0.8, 0.7, 0.9, 0.8, 0.5), ("a", 0.79, 0.69, 0.89, 0.8, 0.5), ("c", 0.2, 0.1, 0.3, 0.1, 0.0)]
    )
    v = verdict(t, ROWS, {}, CFG, has_truth=True)
    assert v["status"] == "tie" and v["top"] == "b" and v["tied"] == ["a"]  # the mean decides, not the name
    assert "tie" in v["text"]


def test_a_clear_winner_is_named_with_its_p_top():
    t = table([("a", 0.8, 0.75, 0.85, 0.8, 0.95), ("b", 0.5, 0.45, 0.55, 0.5, 0.05)])
    v = verdict(t, ROWS, {}, CFG, has_truth=True)
    assert v["status"] == "method" and v["top"] == "a" and "P(top) 0.95" in v["text"]


def test_no_method_is_named_below_the_normalised_bar_or_after_failing_sanity():
    t = table([("a", 0.3, 0.25, 0.35, 0.2, 0.95), ("b", 0.1, 0.05, 0.15, 0.0, 0.05)])
    v = verdict(t, ROWS, {}, CFG, has_truth=True)
    assert v["status"] == "none" and "no method clears the oracle-normalised bar of 0.5" in v["text"]
    good = table([("a", 0.8, 0.75, 0.85, 0.8, 0.95), ("b", 0.5, 0.45, 0.55, 0.6, 0.05)])
    v = verdict(good, ROWS, {"a": False, "b": True}, CFG, has_truth=True)
    assert v["top"] == "b" and v["failed_sanity"] == ["a"] and v["order"] == ["a", "b"]
    v = verdict(good, ROWS, {"a": False, "b": False}, CFG, has_truth=True)
    assert v["status"] == "none" and "sanity" in v["text"]


def test_the_named_method_reports_p_top_among_the_methods_that_pass_sanity():
    # "a" wins every draw but fails sanity; among the rest, "b" beats "c" in most draws
    t = table(
        [("a", 0.9, 0.85, 0.95, 0.9, 1.0), ("b", 0.6, 0.55, 0.65, 0.7, 0.0), ("c", 0.3, 0.25, 0.35, 0.3, 0.0)]
    )
    t["p_top_named"] = [np.nan, 0.97, 0.03]
    v = verdict(t, ROWS, {"a": False}, CFG, has_truth=True)
    assert v["top"] == "b" and "P(top) 0.97 among the 2 method(s)" in v["text"]


def test_statistics_computes_p_top_among_sane_methods():
    from histoxai.xai_eval.suite import statistics

    rng = np.random.default_rng(0)
    rows = {m: {"kind": "method", "resolution": [8, 8]} for m in ("a", "b", "c")}
    patches = np.arange(40)
    per_patch = pd.DataFrame(
        [{"patch_id": p, "sample": f"s{p % 5}", "method": m, "mass_accuracy": base + 0.05 * rng.normal()}
         for p in patches for m, base in (("a", 0.9), ("b", 0.6), ("c", 0.3))]
    )  # fmt: skip
    cfg = XaiEvalConfig(bootstrap=200)
    out = statistics(per_patch, rows, (8, 8), cfg, 0, {"a": False, "b": True, "c": True})
    s = out[out["metric"] == "mass_accuracy"].set_index("method")
    assert s.loc["a", "p_top"] == pytest.approx(1.0) and np.isnan(s.loc["a", "p_top_named"])
    assert s.loc["b", "p_top_named"] == pytest.approx(1.0) and s.loc["c", "p_top_named"] == pytest.approx(0.0)
