import pytest
import torch

from histoxai.xai_eval.stability import max_sensitivity, variant_agreement, variant_pairs
from tests.xai_eval.conftest import input_gradient


def fresh_random(model, images):
    return torch.rand(images.shape[0], *images.shape[-2:])


def test_a_deterministic_method_at_zero_radius_has_zero_sensitivity(tiny_model, images):
    out = max_sensitivity(tiny_model, images, input_gradient(0), radius=1e-12, draws=3)
    assert out["max_sensitivity"].numpy() == pytest.approx(0.0, abs=1e-4)


def test_random_maps_are_maximally_sensitive_and_more_draws_never_lower_the_maximum(tiny_model, images):
    grad = max_sensitivity(tiny_model, images, input_gradient(0), radius=0.01, draws=5, seed=1)
    rand = max_sensitivity(tiny_model, images, fresh_random, radius=0.01, draws=5, seed=1)
    assert float(rand["max_sensitivity"].mean()) > 0.5 > float(grad["max_sensitivity"].mean())
    more = max_sensitivity(tiny_model, images, input_gradient(0), radius=0.01, draws=10, seed=1)
    assert (more["max_sensitivity"] >= grad["max_sensitivity"] - 1e-12).all()  # same first 5 draws


def test_smoothgrad_with_shared_noise_is_not_penalised_for_its_own_sampling(tiny_model, images):
    """The seeded re-explainer draws the same SmoothGrad noise on every call, so at a
    tiny radius only the input change is measured; unseeded noise would dominate."""
    from histoxai.xai_eval.inputs import explainer

    variant = {"method": "smoothgrad", "params": {"sigma": 0.2, "n": 4}}
    shared = explainer(variant, 0, "higher", [0.0] * len(images), seed=3)
    out = max_sensitivity(tiny_model, images, shared, radius=1e-9, draws=3)
    assert out["max_sensitivity"].numpy() == pytest.approx(0.0, abs=1e-3)

    def unshared(model, x):
        from histoxai.explain.methods import run_variant
        from histoxai.explain.scores import SCORES

        return run_variant(variant, model, x, 0, SCORES["higher"]).detach()

    noisy = max_sensitivity(tiny_model, images, unshared, radius=1e-9, draws=3)
    assert float(noisy["max_sensitivity"].mean()) > 0.1


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


def test_max_sensitivity_needs_a_draw(tiny_model, images):
    with pytest.raises(ValueError, match="at least one draw"):
        max_sensitivity(tiny_model, images, input_gradient(0), draws=0)
