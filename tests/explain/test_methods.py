"""Every saliency method honours the adapter contract; variants resolve with checked params."""

from __future__ import annotations

import pytest
import torch

from histoxai.config import ExplainConfig, VariantConfig
from histoxai.explain.methods import METHODS, method_params, resolve_variants, run_variant
from histoxai.explain.scores import SCORES

# Cheap parameters so the whole registry runs in seconds on CPU.
FAST = {
    "smoothgrad": {"n": 4, "noise_batch": 2},
    "integrated_gradients": {"steps": 4},
    "occlusion": {"window": 16, "stride": 16},
}
# Maps linear in the score, so s -> -s flips their sign.
LINEAR = {
    "gradcam": {"relu": False},
    "hirescam": {},
    "gradient": {},
    "smoothgrad": {},
    "integrated_gradients": {},
    "occlusion": {},
}


def variant(method: str, **params) -> dict:
    return resolve_variants([VariantConfig(method, method, {**FAST.get(method, {}), **params})])[method]


@pytest.fixture(scope="module")
def small(images) -> torch.Tensor:
    return images[:2, :, :32, :32].contiguous()


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_and_score_gives_finite_maps_of_patch_shape(model, small, method, score):
    y = torch.tensor([0.5, 2.0])
    maps = run_variant(variant(method), model, small, 1, SCORES[score], y)
    assert maps.shape == (2, 32, 32)
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("method", sorted(LINEAR))
def test_lower_flips_the_sign_of_linear_maps(model, small, method):
    v = variant(method, **LINEAR[method])
    torch.manual_seed(0)
    up = run_variant(v, model, small, 0, SCORES["higher"])
    torch.manual_seed(0)
    down = run_variant(v, model, small, 0, SCORES["lower"])
    assert up.abs().max() > 0
    torch.testing.assert_close(down, -up, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated_gradients"])
def test_target_score_weights_each_image_by_its_own_error(model, small, method):
    # With σ = 0, s = −(ŷ − y)² has gradient 2 (y − ŷ) ∂ŷ/∂x: the measured values must
    # follow their images through captum's batch expansion.
    v = variant(method, **({"sigma": 0.0} if method == "smoothgrad" else {}))
    y_hat = model(small)[:, 0].detach()
    y = y_hat + torch.tensor([0.5, -2.0])
    up = run_variant(v, model, small, 0, SCORES["higher"])
    towards = run_variant(v, model, small, 0, SCORES["target"], y)
    if method == "integrated_gradients":  # the path integral does not factor; the sign does
        assert (towards.sum((1, 2)) * up.sum((1, 2)) * torch.tensor([1.0, -1.0]) > 0).all()
    else:
        expected = 2 * (y - y_hat)[:, None, None] * up
        torch.testing.assert_close(towards, expected, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "occlusion", "hirescam"])
def test_a_batch_gives_the_maps_of_its_images_one_by_one(model, small, method):
    v = variant(method)
    batched = run_variant(v, model, small, 1, SCORES["higher"])
    single = torch.cat([run_variant(v, model, small[i : i + 1], 1, SCORES["higher"]) for i in range(2)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-7)


def test_layercam_fuses_layers_by_elementwise_max(model, images):
    layers = [-3, -2, -1]
    fused = run_variant(variant("layercam", layers=layers), model, images, 0, SCORES["higher"])
    per_layer = [
        run_variant(variant("layercam", layers=[layer]), model, images, 0, SCORES["higher"])
        for layer in layers
    ]
    torch.testing.assert_close(fused, torch.stack(per_layer).amax(dim=0))
    assert not all(torch.equal(fused, m) for m in per_layer)  # more than one layer contributes


def test_smoothgrad_noise_batches_average_like_one_batch(model, small):
    # captum draws noise per chunk, so compare noise-free runs: with σ = 0 every
    # chunking (including a last, smaller chunk) must average to the plain gradient.
    grad = run_variant(variant("gradient"), model, small, 0, SCORES["higher"])
    for batch in (1, 3, 4):
        sg = run_variant(
            variant("smoothgrad", sigma=0.0, noise_batch=batch), model, small, 0, SCORES["higher"]
        )
        torch.testing.assert_close(sg, grad, rtol=1e-4, atol=1e-8)


def test_variants_fill_defaults_and_reject_typos():
    variants = resolve_variants(ExplainConfig().methods)
    assert list(variants) == ["gradcampp", "layercam", "smoothgrad_s0.2", "smoothgrad_s0.3"]
    assert variants["smoothgrad_s0.3"] == {
        "method": "smoothgrad",
        "params": {"sigma": 0.3, "n": 30, "noise_batch": 0, "abs": False},
    }
    assert variants["layercam"]["params"]["layers"] == [-3, -2, -1]
    assert method_params("gradcam", {"layer": "backbone.layer3"})["layer"] == "backbone.layer3"
    with pytest.raises(ValueError, match="unknown saliency method 'gradcamm'"):
        resolve_variants(["gradcamm"])
    with pytest.raises(ValueError, match=r"explain.methods\[0\].*unknown parameter 'sigm'"):
        resolve_variants([VariantConfig("sg", "smoothgrad", {"sigm": 0.2})])
    with pytest.raises(ValueError, match="smoothgrad.n=2.5: expected an integer"):
        resolve_variants([VariantConfig("sg", "smoothgrad", {"n": 2.5})])
    with pytest.raises(ValueError, match="listed twice"):
        resolve_variants(["gradcam", VariantConfig("gradcam", "hirescam")])
    with pytest.raises(ValueError, match="without '__'"):
        resolve_variants([VariantConfig("a__b", "gradcam")])
