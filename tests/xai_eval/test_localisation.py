import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from histoxai.xai_eval.localisation import (
    auroc,
    localisation_scores,
    mass_accuracy,
    object_scores,
    pointing_game,
    rank_accuracy,
)
from tests.xai_eval.helpers import blob_truth


def test_the_truth_itself_scores_perfectly_and_its_negation_scores_worst():
    truth = blob_truth()
    good = localisation_scores(torch.from_numpy(truth.signed), truth)
    bad = localisation_scores(-torch.from_numpy(truth.signed), truth)
    for name in (
        "mass_accuracy",
        "rank_accuracy",
        "pointing_game",
        "auroc",
        "signed_corr",
        "nucleus_hit_rate",
    ):
        assert good[name].numpy() == pytest.approx(1.0), name
        assert float(bad[name].mean()) < float(good[name].mean()), name
    assert good["nucleus_evenness"].numpy() == pytest.approx(1.0)
    assert good["signed_corr"].numpy() == pytest.approx(1.0) and bad["signed_corr"].numpy() == pytest.approx(
        -1.0
    )
    assert good["distractor_share"].abs().max() == 0 and good["uncounted_share"].abs().max() == 0


def test_a_random_map_scores_at_chance():
    truth = blob_truth(n=64, size=32)
    maps = torch.rand(truth.signed.shape, generator=torch.Generator().manual_seed(1))
    s = localisation_scores(maps, truth)
    area = truth.region.mean(axis=(1, 2))
    assert float(s["auroc"].mean()) == pytest.approx(0.5, abs=0.02)
    assert float(s["mass_accuracy"].mean()) == pytest.approx(float(area.mean()), abs=0.01)
    assert float(s["signed_corr"].mean()) == pytest.approx(0.0, abs=0.02)


def test_mass_on_distractors_and_uncounted_nuclei_is_measured():
    truth = blob_truth()
    seeker = torch.from_numpy(truth.distractor.astype(np.float32))
    s = localisation_scores(seeker, truth)
    assert s["distractor_share"].numpy() == pytest.approx(1.0)
    assert s["mass_accuracy"].numpy() == pytest.approx(0.0)
    s = localisation_scores(torch.from_numpy(truth.uncounted.astype(np.float32)), truth)
    assert s["uncounted_share"].numpy() == pytest.approx(1.0)


def test_hit_rate_counts_nuclei_above_their_uniform_share_and_evenness_falls_when_one_dominates():
    truth = blob_truth(n=2)
    inst = torch.from_numpy(truth.instances)
    one = (inst == 1).float()  # all mass on nucleus 1
    s = object_scores(one, inst)
    assert s["nucleus_hit_rate"].numpy() == pytest.approx(0.5)
    assert s["nucleus_evenness"].numpy() == pytest.approx(0.0, abs=1e-9)
    empty = object_scores(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int32))
    assert torch.isnan(empty["nucleus_hit_rate"]).all()


def test_auroc_matches_scikit_learn_with_ties():
    truth = blob_truth(n=4, size=12, seed=3)
    maps = torch.rand(truth.signed.shape).round(decimals=1)
    region = torch.from_numpy(truth.region)
    expected = [roc_auc_score(region[i].flatten(), maps[i].flatten()) for i in range(4)]
    np.testing.assert_allclose(auroc(maps, region).numpy(), expected, atol=1e-12)


def test_mass_accuracy_counts_only_positive_relevance():
    region = torch.tensor([[[True, False, False]]])
    maps = torch.tensor([[[1.0, 1.0, -5.0]]])
    assert mass_accuracy(maps, region).item() == pytest.approx(0.5)
    assert mass_accuracy(-maps.abs(), region).item() == pytest.approx(1 / 3)  # no positive mass: uniform


def test_a_flat_map_scores_exactly_chance():
    truth = blob_truth()
    region = torch.from_numpy(truth.region)
    area = region.double().mean(dim=(1, 2)).numpy()
    for flat in (torch.ones(region.shape), torch.zeros(region.shape)):
        for fn in (mass_accuracy, rank_accuracy, pointing_game):
            np.testing.assert_allclose(fn(flat, region).numpy(), area, atol=1e-12)
        np.testing.assert_allclose(auroc(flat, region).numpy(), 0.5)


def test_quantus_agrees_on_the_same_inputs():
    """Quantus 0.6 is the test oracle of the four published localisation metrics (it is
    not called at run time)."""
    quantus = pytest.importorskip("quantus")
    truth = blob_truth(n=6, size=16, seed=5)
    maps = torch.randn(truth.signed.shape, generator=torch.Generator().manual_seed(7))
    region = torch.from_numpy(truth.region)
    a = maps.double().numpy()[:, None]
    s = region.numpy()[:, None].astype(np.float64)
    x, y = np.zeros((len(a), 3, 16, 16)), np.zeros(len(a), dtype=np.int64)
    kw = {"disable_warnings": True, "abs": False, "normalise": False}
    cases = {
        "mass_accuracy": (quantus.RelevanceMassAccuracy(**kw), np.clip(a, 0, None)),
        "rank_accuracy": (quantus.RelevanceRankAccuracy(**kw), a),
        "pointing_game": (quantus.PointingGame(**kw), a),
        "auroc": (quantus.AUC(**kw), a),
    }
    ours = localisation_scores(maps, truth)
    for name, (metric, a_in) in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = metric(model=None, x_batch=x, y_batch=y, a_batch=a_in, s_batch=s, channel_first=True)
        np.testing.assert_allclose(
            ours[name].numpy(), np.asarray(theirs, dtype=np.float64), atol=1e-12, err_msg=name
        )


def test_rank_accuracy_is_the_share_of_the_top_k_pixels_in_the_mask():
    region = torch.tensor([[[True, True, False, False]]])
    maps = torch.tensor([[[0.9, 0.1, 0.8, 0.0]]])
    assert rank_accuracy(maps, region).item() == pytest.approx(0.5)
