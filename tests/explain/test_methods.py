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
    "gradient_shap": {"n": 4},
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
    "deeplift": {},
    "gradient_shap": {},
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
    assert not maps.requires_grad  # the store's writer turns maps into NumPy arrays


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
        "params": {
            "sigma": 0.3,
            "n": 30,
            "noise_batch": 0,
            "abs": False,
            "reduce": "auto",
            "sigma_relative": False,
        },
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


# --------------------------------------------------------------------------- thesis forms (issue 12)


def test_smoothgrad_thesis_form_is_mean_abs_gradient_then_channel_max(model, small):
    # tf-keras-vis: per noisy copy |∂s/∂x|, averaged, then max over channels. With σ = 0
    # every copy is x, so the map is max_c |∂s/∂x_c| exactly; the signed sum differs.
    x = small.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    thesis = variant("smoothgrad", sigma=0.0, abs=True, reduce="max", sigma_relative=True)
    got = run_variant(thesis, model, small, 0, SCORES["higher"])
    torch.testing.assert_close(got, g.abs().amax(1), rtol=1e-4, atol=1e-8)
    summed = run_variant(variant("smoothgrad", sigma=0.0, reduce="sum"), model, small, 0, SCORES["higher"])
    torch.testing.assert_close(summed, g.sum(1), rtol=1e-4, atol=1e-8)
    with pytest.raises(ValueError, match=r"smoothgrad.reduce='mean': expected one of"):
        variant("smoothgrad", reduce="mean")


class Recorder(torch.nn.Module):
    """Records the images it sees; output: the mean of each image (one head)."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x.mean((1, 2, 3))[:, None] * torch.ones(1, 1, requires_grad=True)


@pytest.mark.parametrize("relative", [False, True])
def test_smoothgrad_sigma_is_relative_to_each_images_range(small, relative):
    # Image 0 spans [0, 1], image 1 [0.45, 0.55] (range 0.1): with sigma_relative its noise
    # is σ·0.1, as tf-keras-vis; without, both get σ.
    pair = small.clone()
    pair[0] = (pair[0] - pair[0].min()) / (pair[0].max() - pair[0].min())
    pair[1] = 0.45 + 0.1 * (pair[1] - pair[1].min()) / (pair[1].max() - pair[1].min())
    rec = Recorder()
    v = variant("smoothgrad", sigma=0.2, n=4, noise_batch=4, sigma_relative=relative)
    run_variant(v, rec, pair, 0, SCORES["higher"])
    (seen,) = rec.seen  # (2 * 4, 3, H, W), copies of each image next to each other
    noise = (seen - pair.repeat_interleave(4, dim=0)).view(2, -1).std(dim=1)
    expected = torch.tensor([0.2, 0.02 if relative else 0.2])
    torch.testing.assert_close(noise, expected, rtol=0.05, atol=0.0)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_blurred_reference_completeness(model, small, method):
    # Σ map ≈ s(x) − s(x'), x' the blurred image (completeness of IG and DeepLIFT-rescale);
    # the test can fail: against the constant-0 reference the sum is different.
    from histoxai.explain.methods import blur

    params = {"blur_sigma_px": 3.0, **({"steps": 64} if method == "integrated_gradients" else {})}
    maps = run_variant(variant(method, **params), model, small, 0, SCORES["higher"])
    with torch.no_grad():
        delta = model(small)[:, 0] - model(blur(small, 3.0))[:, 0]
        delta_zero = model(small)[:, 0] - model(torch.zeros_like(small))[:, 0]
    # captum's DeepLIFT max-pool rule is approximate: its sum is looser than IG's integral.
    tol = (0.1 if method == "integrated_gradients" else 0.25) * delta.abs().max()
    torch.testing.assert_close(maps.sum((1, 2)), delta, rtol=0.0, atol=float(tol))
    assert (maps.sum((1, 2)) - delta_zero).abs().max() > tol


def test_deeplift_and_ig_agree_with_captum_on_the_module(model, small):
    # The captum reference on the bare model output (score 'higher' is the identity).
    from captum.attr import DeepLift

    from histoxai.explain.methods import blur

    class Head(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    ref = DeepLift(Head(model)).attribute(small, baselines=blur(small, 5.0), target=1).sum(1)
    got = run_variant(variant("deeplift"), model, small, 1, SCORES["higher"])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_blur_keeps_a_constant_image_and_smooths_noise(small):
    from histoxai.explain.methods import blur

    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(blur(flat, 2.0), flat)
    assert blur(small, 2.0).std() < 0.5 * small.std()
    assert blur(small, 2.0).shape == small.shape


def test_native_resolution_of_cams_and_pixel_methods(model):
    from histoxai.explain.methods import native_resolution

    # resnet10t at 64 px: stages at /2, /4, /8, /16, /32.
    def res(method, **params):
        return native_resolution(model, 64, variant(method, **params))

    assert res("gradcampp") == (2, 2)
    assert res("gradcampp", layer=-3) == (8, 8)
    assert res("hirescam", layer="last_conv") == (2, 2)
    assert res("layercam", layers=[0, 1, -1]) == (32, 32)
    assert res("smoothgrad") == (64, 64)
    assert res("integrated_gradients") == (64, 64)
    assert res("occlusion", window=16, stride=8) == (7, 7)
    assert native_resolution(model, 128, variant("gradcam")) == (4, 4)


def test_last_conv_resolves_for_timm_models():
    import timm

    from histoxai.explain.cams import resolve_layer
    from histoxai.models.backbones import last_conv_layer

    assert last_conv_layer(timm.create_model("tf_efficientnetv2_s", num_classes=0)) == "conv_head"
    assert last_conv_layer(timm.create_model("resnet10t", num_classes=0)) == "layer4.0.conv2"
    # MobileNetV3's conv_head runs after pooling (1x1): not a CAM layer.
    assert last_conv_layer(timm.create_model("mobilenetv3_small_100", num_classes=0)) != "conv_head"
    from tests.explain.conftest import tiny_regressor

    m = tiny_regressor()
    assert resolve_layer(m, "last_conv")[0] == "backbone.layer4.0.conv2"


def test_linear_head_activation_is_affine_in_the_pooled_features():
    from histoxai.config import ModelConfig
    from histoxai.models import build_regressor

    cfg = ModelConfig(
        backbone="resnet10t", targets=("md", "fa"), hidden_width=8, feature_width=4, dropout=0.0
    )
    relu = build_regressor(cfg, [1.0, 0.5], [0.5, 0.1]).eval()
    linear = build_regressor(
        ModelConfig(**{**cfg.__dict__, "head_activation": "linear"}), [1.0, 0.5], [0.5, 0.1]
    ).eval()
    assert sum(isinstance(m, torch.nn.ReLU) for m in linear.neck.modules()) == 0
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu.neck.modules()) == 1
    h = torch.randn(5, linear.neck[1].in_features)
    a, b = torch.randn_like(h), torch.randn_like(h)
    f = lambda z: torch.cat([linear.heads[t](linear.neck(z)) for t in linear.targets], 1)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(f(a + b) - f(b), f(a) - f(torch.zeros_like(a)), rtol=1e-4, atol=1e-5)


def test_layercam_gamma_zero_is_eq_1_9_exactly(model, images):
    # γ = 0: ReLU(Σ_k ReLU(∂s/∂A^k) ⊙ A^k) upsampled, no tanh rescaling; γ = 2 differs.
    from histoxai.explain.cams import layer_cams, upsample

    (raw,) = layer_cams(model, images, 0, SCORES["higher"], [-2], "layercam")
    eq19 = upsample(raw.clamp(min=0), tuple(images.shape[-2:]))
    assert eq19.max() > 0
    got = run_variant(variant("layercam", layers=[-2], gamma=0.0), model, images, 0, SCORES["higher"])
    torch.testing.assert_close(got, eq19)
    tanh = run_variant(variant("layercam", layers=[-2], gamma=2.0), model, images, 0, SCORES["higher"])
    assert not torch.allclose(tanh, eq19)


def test_last_conv_names_the_same_layer_as_its_path(model, images):
    by_alias = run_variant(variant("gradcampp", layer="last_conv"), model, images, 1, SCORES["higher"])
    by_path = run_variant(
        variant("gradcampp", layer="backbone.layer4.0.conv2"), model, images, 1, SCORES["higher"]
    )
    torch.testing.assert_close(by_alias, by_path)
