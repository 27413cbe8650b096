import numpy as np
import pytest
import torch

from histoxai.xai_eval.inputs import explainer, select_patches, shortcut_cue, stratified


def test_select_patches_is_all_or_a_seeded_sorted_subset():
    ids = np.arange(100, 200)
    assert np.array_equal(select_patches(ids, 0, 0), ids)  # 0: every patch
    a, b = select_patches(ids, 10, seed=3), select_patches(ids, 10, seed=3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0) and set(a) <= set(ids)


def test_stratified_patches_spread_over_samples():
    samples = np.array(["s1"] * 14 + ["s2"] * 2 + ["s3"] * 4)
    pick = stratified(samples, 6, seed=0)
    assert sorted(np.unique(samples[pick], return_counts=True)[1]) == [2, 2, 2]
    assert np.array_equal(pick, stratified(samples, 6, seed=0))
    assert len(stratified(samples, 100, 0)) == 20


def test_shortcut_option_needs_the_cue_column(tiny_store):
    ids = tiny_store.ids()
    assert shortcut_cue(tiny_store, ids, "auto") is None
    assert shortcut_cue(tiny_store, ids, "off") is None
    with pytest.raises(ValueError, match="has no 'shortcut_cue' column"):
        shortcut_cue(tiny_store, ids, "on")


def test_re_explainers_are_seeded_and_leave_the_global_rng_alone(tiny_model, images):
    fn = explainer(
        {"method": "smoothgrad", "params": {"sigma": 0.3, "n": 3}}, 0, "higher", np.zeros(4), seed=7
    )
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = fn(tiny_model, images)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the caller's stream is untouched
    assert torch.equal(a, fn(tiny_model, images))
    other = explainer(
        {"method": "smoothgrad", "params": {"sigma": 0.3, "n": 3}}, 0, "higher", np.zeros(4), seed=8
    )
    assert not torch.equal(a, other(tiny_model, images))
    with pytest.raises(ValueError, match="score 'up'"):
        explainer({"method": "gradient", "params": {}}, 0, "up", np.zeros(4), 0)
