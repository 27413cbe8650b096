"""Meta-evaluation: the measuring stick on a small *trained* phantom model, with
planted explainers of known quality (MetaQuantus' habit). The GT oracle must rank
first, a sign flip must score worse, a shifted map and a resolution-matched random map
must never beat chance, and a distractor-seeking explainer must rank last without any
help from the sanity gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histoxai.config import XaiEvalConfig
from histoxai.xai_eval.faithfulness import gaussian_blur
from histoxai.xai_eval.registry import METRICS
from histoxai.xai_eval.resolution import smooth_random
from histoxai.xai_eval.stats import overlaps
from histoxai.xai_eval.suite import evaluate_target
from histoxai.xai_eval.tissue import labels_from_masks
from histoxai.xai_eval.truth import load_truth
from tests.xai_eval.conftest import input_gradient

SIGNED = ("mass_accuracy", "rank_accuracy", "pointing_game", "auroc", "signed_corr", "nucleus_hit_rate",
          "deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc", "road")  # fmt: skip
"""Metrics that read the sign of the relevance against the truth's sign."""


def content(model, x):
    """Gradient × (x − blurred x): relevance of each pixel's content against a blurred
    baseline (the kind of map that can be right under the signed rule)."""
    return input_gradient(0)(model, x) * (x - gaussian_blur(x, 2.0)).sum(dim=1)


@pytest.fixture(scope="module")
def meta(phantom_cc):
    store, model = phantom_cc["store"], phantom_cc["model"]
    samples_all = store.index["sample"].to_numpy()
    pick = np.sort(np.concatenate([np.flatnonzero(samples_all == s)[:12] for s in ("s1", "s2", "s3")]))
    ids, x, y = phantom_cc["ids"][pick], phantom_cc["images"][pick], phantom_cc["y"][pick]
    truth = load_truth(store, ids, "cc")
    signed = torch.from_numpy(truth.signed)
    seeker = torch.from_numpy(truth.distractor.astype(np.float32))
    seeker = seeker + 1e-3 * torch.rand(seeker.shape, generator=torch.Generator().manual_seed(5))
    maps = {
        "truth": signed,
        "content": content(model, x),
        "gradient": input_gradient(0)(model, x),
        "shifted": torch.roll(signed, x.shape[-1] // 4, dims=-1),  # a quarter patch
        "seeker": seeker,
        "random4": smooth_random(tuple(signed.shape), (4, 4), torch.Generator().manual_seed(99)),
    }
    maps["neg"] = -maps["content"]
    resolutions = {k: (4, 4) if k == "random4" else (32, 32) for k in maps}

    def explain_for(name, rows):
        if name == "gradient":
            return input_gradient(0)
        if name == "seeker":  # model-independent: must fail the randomisation check
            return lambda m, images: seeker[rows]
        return None

    with torch.no_grad():
        y_hat = model(x)[:, 0].numpy()
    cfg = XaiEvalConfig(steps=4, bootstrap=400, sanity_patches=3, robustness_patches=3, robustness_draws=50)
    torch.set_num_threads(1)
    return evaluate_target(
        model, "cc", x, maps, patch_ids=ids, samples=samples_all[ids], y=y, y_hat=y_hat,
        labels=labels_from_masks(store.masks(ids)), score="higher", resolutions=resolutions, cfg=cfg, seed=0,
        truth=truth, explain_for=explain_for, progress=False,
    )  # fmt: skip


def row(result, method, metric):
    t = result.stats
    return t[(t["method"] == method) & (t["metric"] == metric)].iloc[0]


@pytest.mark.slow
def test_the_ground_truth_oracle_ranks_first_on_localisation(meta):
    assert meta.verdict["metric"] == "mass_accuracy"
    assert meta.verdict["order"][0] == "truth"
    assert row(meta, "truth", "mass_accuracy")["p_top"] >= 0.9


@pytest.mark.slow
def test_a_sign_flipped_map_scores_below_the_map_on_every_signed_metric(meta):
    for metric in SIGNED:
        good, bad = row(meta, "content", metric)["mean"], row(meta, "neg", metric)["mean"]
        assert METRICS[metric].better(good, bad), (metric, good, bad)


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["shifted", "random4"])
def test_shifted_and_resolution_matched_random_maps_never_beat_random(meta, planted):
    """Every normalised score's interval reaches down to chance (0) or below, and on
    every other metric the mean is no better than the random row's interval."""
    res = "random" if planted == "shifted" else "random@4x4"
    for metric, meta_ in METRICS.items():
        if metric not in set(meta.stats["metric"]) or metric in ("object_rank_corr",):
            continue
        mine = meta.stats[(meta.stats["method"] == planted) & (meta.stats["metric"] == metric)]
        if not len(mine) or meta_.family in ("randomisation", "robustness"):
            continue
        r = mine.iloc[0]
        if meta_.normalised:
            assert r["norm_lo"] <= 1e-9, (metric, r["norm_lo"])
        else:
            ref = row(meta, res, metric)
            far = ref["hi"] if meta_.higher else ref["lo"]
            assert not meta_.better(r["mean"], far), (metric, r["mean"], far)


@pytest.mark.slow
def test_the_shifted_map_is_a_tie_with_random_on_localisation(meta):
    """Its interval overlaps the random row's: indistinguishable from chance."""
    for metric in ("mass_accuracy", "rank_accuracy", "pointing_game", "auroc", "signed_corr"):
        r, ref = row(meta, "shifted", metric), row(meta, "random", metric)
        assert overlaps((r["lo"], r["hi"]), (ref["lo"], ref["hi"])), metric


@pytest.mark.slow
def test_a_distractor_seeking_explainer_ranks_last_without_the_sanity_gate(meta):
    assert meta.verdict["order"][-1] == "seeker"
    assert row(meta, "seeker", "distractor_share")["mean"] > 5 * row(meta, "random", "distractor_share")["hi"]
    # ... and the gate, a separate check, also catches it (its maps ignore the model)
    assert meta.passes_sanity["seeker"] is False and meta.passes_sanity["gradient"] is True
    assert "seeker" in meta.verdict["failed_sanity"]


@pytest.mark.slow
def test_every_method_has_its_resolution_and_normalised_scores(meta):
    assert meta.rows["random4"]["resolution"] == [4, 4] and meta.rows["content"]["resolution"] == [32, 32]
    assert {"random@4x4", "oracle@4x4", "random", "oracle", "sobel", "darkness"} <= set(meta.rows)
    norm = row(meta, "truth", "mass_accuracy")
    assert norm["norm_mean"] == pytest.approx(1.0)
    assert row(meta, "gradient", "max_sensitivity")["n"] == 3
