import pytest
import torch

from histoxai.xai_eval.faithfulness import (
    _neighbour_mean,
    baseline_images,
    curve_area,
    darkness_maps,
    faithfulness_scores,
    gaussian_blur,
    noisy_linear_impute,
    perturbation_curve,
    relevance_order,
    sobel_maps,
)
from tests.xai_eval.conftest import RegionRedModel

SIZE = 16


@pytest.fixture
def region_model():
    region = torch.zeros(SIZE, SIZE)
    region[:8, :8] = 1.0  # the only pixels that drive the output
    return RegionRedModel(region).eval(), region


@pytest.fixture
def batch():
    """Random patches whose driving region is bright red: its content raises the score."""
    x = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    x[:, 0, :8, :8] = 0.8 + 0.2 * x[:, 0, :8, :8]
    return x


def scores_of(model, images, maps, seed=0):
    predict = lambda x: model(x)[:, 0]  # noqa: E731
    base = baseline_images(images, "mean")
    scores, curves = faithfulness_scores(
        predict, images, maps, base, steps=8, generator=torch.Generator().manual_seed(seed)
    )
    return {k: float(v.mean()) for k, v in scores.items()}, curves


def test_removing_the_true_features_moves_the_prediction_more_than_removing_others(region_model, batch):
    model, region = region_model
    jitter = 1e-3 * torch.rand(batch.shape[0], SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    true = region.expand(len(batch), -1, -1) + jitter
    other = (1 - region).expand(len(batch), -1, -1) + jitter
    rand = torch.rand((len(batch), SIZE, SIZE), generator=torch.Generator().manual_seed(2))
    good, _ = scores_of(model, batch, true)
    bad, _ = scores_of(model, batch, other)
    chance, _ = scores_of(model, batch, rand)
    assert good["deletion_auc"] > chance["deletion_auc"] > bad["deletion_auc"]
    assert good["insertion_auc"] < chance["insertion_auc"] < bad["insertion_auc"]
    assert good["road"] > chance["road"] - 1e-6 and good["road"] > bad["road"]


def test_a_sign_flipped_map_scores_below_the_map_on_every_signed_curve(region_model, batch):
    """Relevance is signed: −map removes the opposing evidence first."""
    model, region = region_model
    signed = (
        region.expand(len(batch), -1, -1) - 0.5 * (1 - region) + 1e-3 * torch.rand(len(batch), SIZE, SIZE)
    )
    good, _ = scores_of(model, batch, signed)
    flipped, _ = scores_of(model, batch, -signed)
    assert good["deletion_auc"] > flipped["deletion_auc"]
    assert good["road_morf_auc"] > flipped["road_morf_auc"]
    assert good["road_lerf_auc"] < flipped["road_lerf_auc"]
    assert good["road"] > 0 > flipped["road"]


def test_deletion_curve_starts_at_zero_and_ends_at_the_baseline_prediction(region_model, batch):
    model, _ = region_model
    predict = lambda x: model(x)[:, 0]  # noqa: E731
    base = baseline_images(batch, "blur", 2.0)
    curve = perturbation_curve(predict, batch, torch.rand(len(batch), SIZE, SIZE), steps=4, baseline=base)
    assert curve.shape == (len(batch), 5)
    assert curve[:, 0].abs().max() == 0
    expected = (predict(batch) - predict(base)).double()  # the score drop, signed
    torch.testing.assert_close(curve[:, -1], expected)


def test_insertion_curve_ends_at_the_original_prediction(region_model, batch):
    model, _ = region_model
    predict = lambda x: model(x)[:, 0]  # noqa: E731
    base = baseline_images(batch, "mean")
    curve = perturbation_curve(predict, batch, torch.rand(len(batch), SIZE, SIZE), 4, "insertion", base)
    assert curve[:, -1].abs().max() == pytest.approx(0.0, abs=1e-6)


def test_curve_area_is_the_trapezoid_mean_over_fractions():
    curves = torch.tensor([[0.0, 1.0, 1.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    assert curve_area(curves).tolist() == pytest.approx([0.75, 2.0])


def test_relevance_order_ranks_most_relevant_first_and_breaks_ties_into_a_permutation():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert relevance_order(maps).flatten().tolist() == [3, 0, 1, 2]
    flat = relevance_order(torch.zeros(2, 4, 4)).reshape(2, -1)
    assert all(sorted(row.tolist()) == list(range(16)) for row in flat)


def test_linear_imputation_recovers_a_smooth_ramp_and_keeps_known_pixels():
    ramp = torch.linspace(0, 1, 24).expand(24, 24)
    images = ramp.expand(1, 3, 24, 24).clone()
    removed = torch.zeros(1, 1, 24, 24, dtype=torch.bool)
    removed[..., 8:16, 8:16] = True
    out = noisy_linear_impute(images, removed, noise_sd=0.0, iters=200)
    assert torch.equal(out[~removed.expand_as(out)], images[~removed.expand_as(images)])
    assert (out - images).abs().max() < 0.02


def test_baselines_and_edge_maps():
    flat = torch.full((2, 3, 8, 8), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)
    assert sobel_maps(flat).abs().max() < 1e-6
    step = torch.zeros(1, 3, 8, 8)
    step[..., 4:] = 1.0
    edges = sobel_maps(step)[0]
    assert edges[:, 3:5].min() > 0.5 and edges[:, :2].max() < 1e-6
    assert darkness_maps(flat).numpy() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="perturbation baseline 'zeros'"):
        baseline_images(flat, "zeros")


def test_the_sweep_is_roads_weighted_mean_of_the_eight_neighbours():
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(1))
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    expected = torch.zeros_like(x)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                weight = 1 / 12 if dy and dx else 1 / 6
                expected += weight * p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    torch.testing.assert_close(_neighbour_mean(x), expected)


def test_imputation_leaves_untouched_images_and_fills_fully_removed_ones_with_noise_only():
    images = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    removed = torch.zeros(3, 1, 12, 12, dtype=torch.bool)
    removed[1] = True
    removed[2, :, 3:7, 3:7] = True
    out = noisy_linear_impute(images, removed, noise_sd=0.05, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3)) * 0.05
    assert torch.equal(out[0], images[0])
    torch.testing.assert_close(out[1], noise[1].clamp(0.0, 1.0))
    assert torch.equal(out[2][~removed[2].expand(3, -1, -1)], images[2][~removed[2].expand(3, -1, -1)])


@pytest.mark.parametrize("mode", ["deletion", "insertion", "road_morf", "road_lerf"])
def test_known_scores_stand_in_for_exactly_the_images_they_score(region_model, batch, mode):
    """Curves with the original's and the baseline's scores given equal curves that
    predict every fraction's image (f = 0 and f = 1 included)."""
    model, _ = region_model
    predict = lambda x: model(x)[:, 0].double()  # noqa: E731
    maps = torch.rand(len(batch), SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    base = baseline_images(batch, "blur", 2.0)
    with torch.no_grad():
        ref, base_score = predict(batch), predict(base)
    got = perturbation_curve(predict, batch, maps, 4, mode, base, 0.01, 8, torch.Generator().manual_seed(5),
                             ref, base_score)  # fmt: skip
    # every fraction predicted: the same perturbed images, scored one by one
    order = relevance_order(-maps if mode == "road_lerf" else maps, torch.Generator().manual_seed(5))
    n = SIZE * SIZE
    first = torch.stack([order < round(f * n) for f in torch.linspace(0, 1, 5).tolist()], 1)[:, :, None]
    x = batch[:, None]
    if mode == "deletion":
        pert = torch.where(first, base[:, None], x)
    elif mode == "insertion":
        pert = torch.where(first, x, base[:, None])
    else:
        flat = x.expand(-1, 5, -1, -1, -1).reshape(-1, 3, SIZE, SIZE)
        g = torch.Generator().manual_seed(5)
        relevance_order(-maps if mode == "road_lerf" else maps, g)  # the draws before the imputation's
        pert = noisy_linear_impute(flat, first.reshape(-1, 1, SIZE, SIZE), 0.01, generator=g)
    with torch.no_grad():
        expected = ref[:, None] - predict(pert.reshape(-1, 3, SIZE, SIZE)).view(len(batch), 5)
    torch.testing.assert_close(got, expected)
