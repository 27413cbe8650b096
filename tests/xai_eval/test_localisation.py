import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from histoxai.data.store import MASK_CLASSES
from histoxai.xai_eval.localisation import (
    TRUTH_CLASSES,
    auroc,
    localisation_scores,
    mass_accuracy,
    quantus_localisation,
    rank_accuracy,
    truth_mask,
)

NUCLEI, AIR, DISTRACTOR = (MASK_CLASSES.index(c) for c in ("nuclei", "air", "distractor"))


def random_masks(n=32, size=24, seed=0):
    return torch.randint(
        0, len(MASK_CLASSES), (n, size, size), generator=torch.Generator().manual_seed(seed)
    ).to(torch.uint8)


@pytest.mark.parametrize("target", sorted(TRUTH_CLASSES))
def test_a_map_equal_to_the_truth_mask_scores_perfectly(target):
    masks = random_masks()
    perfect = truth_mask(masks, target).float()
    scores = localisation_scores(perfect, masks, target)
    for name in ("mass_accuracy", "rank_accuracy", "pointing_game", "auroc"):
        assert scores[name].numpy() == pytest.approx(np.ones(len(masks))), name
    assert scores["distractor_share"].abs().max() == 0


def test_a_random_map_scores_at_chance():
    masks = random_masks(n=64, size=32)
    maps = torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    scores = localisation_scores(maps, masks, "cc")
    area = truth_mask(masks, "cc").double().mean(dim=(1, 2))
    assert float(scores["auroc"].mean()) == pytest.approx(0.5, abs=0.02)
    assert float(scores["mass_accuracy"].mean()) == pytest.approx(float(area.mean()), abs=0.02)
    assert float(scores["rank_accuracy"].mean()) == pytest.approx(float(area.mean()), abs=0.02)
    assert float(scores["distractor_share"].mean()) == pytest.approx(0.25, abs=0.02)


def test_md_truth_is_nuclei_and_air():
    masks = torch.tensor([[[NUCLEI, AIR, DISTRACTOR, 0]]], dtype=torch.uint8)
    assert truth_mask(masks, "md").tolist() == [[[True, True, False, False]]]
    assert truth_mask(masks, "cc").tolist() == [[[True, False, False, False]]]


def test_auroc_matches_scikit_learn_with_ties():
    masks = random_masks(n=4, size=12, seed=3)
    maps = torch.rand(masks.shape).round(decimals=1)  # many ties
    truth = truth_mask(masks, "md")
    expected = [roc_auc_score(truth[i].flatten(), maps[i].flatten()) for i in range(4)]
    np.testing.assert_allclose(auroc(maps, truth).numpy(), expected, atol=1e-12)


def test_mass_accuracy_counts_only_positive_attribution():
    truth = torch.tensor([[[True, False, False]]])
    maps = torch.tensor([[[1.0, 1.0, -5.0]]])
    assert mass_accuracy(maps, truth).item() == pytest.approx(0.5)
    # no positive mass: treated as a uniform map, i.e. the area share
    assert mass_accuracy(-maps.abs(), truth).item() == pytest.approx(1 / 3)


def test_a_flat_map_scores_exactly_chance():
    masks = random_masks(n=8, size=16, seed=2)
    area = truth_mask(masks, "md").double().mean(dim=(1, 2)).numpy()
    for flat_map in (torch.ones(masks.shape), torch.zeros(masks.shape)):
        for backend in ("torch", "quantus"):
            scores = localisation_scores(flat_map, masks, "md", backend)
            for name in ("mass_accuracy", "rank_accuracy", "pointing_game"):
                np.testing.assert_allclose(
                    scores[name].numpy(), area, atol=1e-12, err_msg=f"{backend} {name}"
                )
            np.testing.assert_allclose(scores["auroc"].numpy(), 0.5, err_msg=backend)


def test_magnitude_relevance_credits_negative_attribution_on_the_truth():
    masks = random_masks(n=4, size=16, seed=4)
    dark_nuclei = -truth_mask(masks, "cc").float()  # e.g. input gradients of a count
    magnitude = localisation_scores(dark_nuclei, masks, "cc")
    signed = localisation_scores(dark_nuclei, masks, "cc", relevance_mode="signed")
    assert magnitude["auroc"].numpy() == pytest.approx(1.0)
    assert signed["auroc"].numpy() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="relevance 'raw'"):
        localisation_scores(dark_nuclei, masks, "cc", relevance_mode="raw")


def test_rank_accuracy_is_the_share_of_the_top_k_pixels_in_the_mask():
    truth = torch.tensor([[[True, True, False, False]]])
    maps = torch.tensor([[[0.9, 0.1, 0.8, 0.0]]])  # top-2: pixels 0 (in) and 2 (out)
    assert rank_accuracy(maps, truth).item() == pytest.approx(0.5)


def test_empty_masks_give_nan_not_a_score():
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)  # stroma only: no nuclei
    scores = localisation_scores(torch.rand(2, 8, 8), masks, "cc")
    for name in ("mass_accuracy", "rank_accuracy", "pointing_game", "auroc"):
        assert torch.isnan(scores[name]).all(), name


def test_quantus_backend_gives_the_same_numbers_as_torch():
    masks = random_masks(n=6, size=16, seed=5)
    masks[0] = 0  # an empty truth mask
    maps = torch.randn(masks.shape, generator=torch.Generator().manual_seed(6))
    maps[1] = 0.0  # a flat map: ties everywhere
    maps[2] = maps[2].round(decimals=0)  # many ties
    for mode in ("magnitude", "signed"):
        ours = localisation_scores(maps, masks, "md", backend="torch", relevance_mode=mode)
        theirs = localisation_scores(maps, masks, "md", backend="quantus", relevance_mode=mode)
        for name in ours:
            np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), atol=1e-12, err_msg=name)


def test_quantus_agrees_without_any_correction_on_maps_without_ties():
    masks = random_masks(n=6, size=16, seed=5)
    maps = torch.randn(masks.shape, generator=torch.Generator().manual_seed(7))
    ours = localisation_scores(maps, masks, "md", backend="torch", relevance_mode="signed")
    theirs = {k: torch.from_numpy(v) for k, v in quantus_localisation(maps, truth_mask(masks, "md")).items()}
    for name in theirs:
        np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), atol=1e-12, err_msg=name)


def test_unknown_target_or_backend_is_a_clear_error():
    masks = random_masks(n=1, size=8)
    with pytest.raises(ValueError, match="no ground-truth classes for target 'xx'"):
        localisation_scores(torch.rand(1, 8, 8), masks, "xx")
    with pytest.raises(ValueError, match="backend 'numpy'"):
        localisation_scores(torch.rand(1, 8, 8), masks, "md", backend="numpy")
