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


def test_one_training_seed_gives_exactly_the_sample_draws():
    samples = np.repeat(["a", "b", "c"], 4)
    draws, codes = stats.sample_weights(samples, 300, 7)
    cells, cell_codes = stats.cell_weights(np.full(12, 3), samples, 300, 7)
    assert np.array_equal(cells, draws) and np.array_equal(cell_codes, codes)


def seeded_table(seed_values: dict[int, dict[str, float]], n_samples: int = 4, per_sample: int = 3):
    """Per-patch rows of every (seed, method): each seed's value of a method is constant."""
    return pd.DataFrame(
        [{"method": m, "seed": s, "patch_id": p, "sample": f"s{p // per_sample}", "mass_accuracy": v,
          "mprt_similarity": (0.1 * p if s == 0 else np.nan)}
         for s, values in seed_values.items() for m, v in values.items()
         for p in range(n_samples * per_sample)]
    )  # fmt: skip


def test_statistics_with_one_seed_are_those_without_a_seed_column():
    from histoxai.xai_eval.suite import statistics

    rng = np.random.default_rng(1)
    per_patch = pd.DataFrame(
        [{"patch_id": p, "sample": f"s{p % 5}", "method": m, "mass_accuracy": base + 0.1 * rng.normal()}
         for p in range(30) for m, base in (("a", 0.7), ("b", 0.6), ("c", 0.3))]
    )  # fmt: skip
    per_patch["auroc"] = np.nan  # a metric without a finite value has no row
    cfg = XaiEvalConfig(bootstrap=300)
    old = statistics(per_patch, ROWS, (32, 32), cfg, 4, {})
    new = statistics(per_patch.assign(seed=9), ROWS, (32, 32), cfg, 4, {})
    pd.testing.assert_frame_equal(old, new, check_exact=True)
    assert set(new["metric"]) == {"mass_accuracy"}
    # the sample bootstrap as it was: draws over samples, codes by patch id
    draws, codes = stats.sample_weights(per_patch.drop_duplicates("patch_id")["sample"].to_numpy(), 300, 4)
    a = per_patch[per_patch["method"] == "a"]
    expected = stats.interval(stats.boot_means(a["mass_accuracy"].to_numpy(), codes, draws), cfg.confidence)
    assert tuple(new.set_index("method").loc["a", ["lo", "hi"]]) == expected


def test_seeds_are_resampled_so_a_seed_that_disagrees_widens_the_interval():
    """Seed 0 scores "a" 1.0, seed 1 scores it 0.0; "b" scores 0.6 on both. A draw holds
    c0 copies of seed 0 (0, 1 or 2 with probabilities 1/4, 1/2, 1/4), so "a"'s bootstrap
    mean is exactly c0 / 2, and "a" is on top only when c0 == 2: P(top) of "a" = 1/4.
    Pooled without resampling seeds "a" would be 0.5 in every draw and "b" always on top."""
    from histoxai.xai_eval.suite import statistics

    rows = {m: {"kind": "method", "resolution": [32, 32]} for m in ("a", "b")}
    per_patch = seeded_table({0: {"a": 1.0, "b": 0.6}, 1: {"a": 0.0, "b": 0.6}})
    cfg = XaiEvalConfig(bootstrap=2000)
    out = statistics(per_patch, rows, (32, 32), cfg, 0, {}).set_index(["metric", "method"])
    a, b = out.loc[("mass_accuracy", "a")], out.loc[("mass_accuracy", "b")]
    assert a["mean"] == pytest.approx(0.5)  # the mean is over every seed's patches
    assert (a["lo"], a["hi"]) == (0.0, 1.0) and (b["lo"], b["hi"]) == (pytest.approx(0.6), pytest.approx(0.6))
    assert a["p_top"] == pytest.approx(0.25, abs=0.04) and b["p_top"] == pytest.approx(0.75, abs=0.04)
    draws, codes = stats.cell_weights(per_patch["seed"], per_patch["sample"], 2000, 0)
    seed_zero = draws.reshape(2000, 2, -1)[:, 0].sum(axis=1) / draws.sum(axis=1)  # c0 / 2 per draw
    a_rows = (per_patch["method"] == "a").to_numpy()
    boot = stats.boot_means(per_patch["mass_accuracy"].to_numpy()[a_rows], codes[a_rows], draws)
    np.testing.assert_allclose(boot, seed_zero)
    assert set(np.round(boot, 12)) == {0.0, 0.5, 1.0}
    unseeded = statistics(per_patch.drop(columns="seed"), rows, (32, 32), cfg, 0, {})
    unseeded = unseeded.set_index(["metric", "method"])
    assert unseeded.loc[("mass_accuracy", "a"), "hi"] == pytest.approx(0.5)
    assert unseeded.loc[("mass_accuracy", "b"), "p_top"] == pytest.approx(1.0)


def test_a_metric_of_the_first_seed_only_is_bootstrapped_over_its_samples():
    from histoxai.xai_eval.suite import statistics

    rows = {m: {"kind": "method", "resolution": [32, 32]} for m in ("a", "b")}
    per_patch = seeded_table({0: {"a": 1.0, "b": 0.6}, 1: {"a": 0.0, "b": 0.6}})
    cfg = XaiEvalConfig(bootstrap=300)
    pooled = statistics(per_patch, rows, (32, 32), cfg, 0, {}).set_index(["metric", "method"])
    first = statistics(per_patch[per_patch["seed"] == 0], rows, (32, 32), cfg, 0, {})
    first = first.set_index(["metric", "method"])
    pd.testing.assert_series_equal(
        pooled.loc["mprt_similarity"]["lo"], first.loc["mprt_similarity"]["lo"], check_exact=True
    )
    assert np.isfinite(pooled.loc["mprt_similarity"][["lo", "hi"]].to_numpy()).all()
