import pytest
import torch

from histoxai.xai_eval.faithfulness import sobel_maps
from histoxai.xai_eval.stability import noise_stability, variant_agreement, variant_pairs
from tests.xai_eval.conftest import input_gradient


def fresh_random(model, images):
    return torch.rand(images.shape[0], *images.shape[-2:])


def test_noise_free_copies_of_a_deterministic_method_are_identical(tiny_model, images):
    out = noise_stability(tiny_model, images, input_gradient(0), noise_sd=0.0, copies=2)
    assert out["noise_rank_corr"].numpy() == pytest.approx(1.0)
    assert out["noise_ssim"].numpy() == pytest.approx(1.0)


def test_small_noise_keeps_gradient_maps_similar_and_random_maps_are_unstable(tiny_model, images):
    grad = noise_stability(tiny_model, images, input_gradient(0), noise_sd=0.01, copies=2)
    rand = noise_stability(tiny_model, images, fresh_random, noise_sd=0.01, copies=2)
    assert float(grad["noise_rank_corr"].mean()) > 0.5
    assert float(rand["noise_rank_corr"].abs().mean()) < 0.1
    edges = noise_stability(tiny_model, images, lambda m, x: sobel_maps(x), noise_sd=0.01, copies=2)
    assert float(edges["noise_ssim"].mean()) < 1.0  # noise changes even model-free maps a little


def test_variant_agreement_of_identical_and_independent_maps():
    a = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    b = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    same = variant_agreement(a, 2 * a)
    assert same["variant_rank_corr"].numpy() == pytest.approx(1.0)
    assert same["variant_ssim"].numpy() == pytest.approx(1.0)
    assert float(variant_agreement(a, b)["variant_rank_corr"].abs().mean()) < 0.2


def test_variant_pairs_pair_variants_of_the_same_method_only():
    variants = {
        "smoothgrad_s0.3": {"method": "smoothgrad", "params": {"sigma": 0.3}},
        "gradcampp": {"method": "gradcampp", "params": {}},
        "smoothgrad_s0.2": {"method": "smoothgrad", "params": {"sigma": 0.2}},
    }
    assert variant_pairs(variants) == [("smoothgrad_s0.2", "smoothgrad_s0.3")]


def test_noise_stability_needs_a_copy(tiny_model, images):
    with pytest.raises(ValueError, match="at least one noisy copy"):
        noise_stability(tiny_model, images, input_gradient(0), copies=0)
