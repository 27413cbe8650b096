import pytest
import torch

from histoxai.xai_eval.faithfulness import sobel_maps
from histoxai.xai_eval.sanity import randomisation_cascade, randomisation_steps, reinitialise, sanity_summary
from tests.xai_eval.conftest import TinyRegressor, constant_map, input_gradient


def test_steps_go_from_the_head_down_to_the_stem(tiny_model):
    steps = randomisation_steps(tiny_model)
    assert [name for name, _ in steps] == ["head", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert steps[0][1] == ["head"]


def test_steps_split_containers_of_blocks():
    model = TinyRegressor()
    model.backbone = torch.nn.Sequential()
    model.backbone.add_module("stem", torch.nn.Conv2d(3, 4, 3))
    model.backbone.add_module(
        "stages",
        torch.nn.Sequential(
            torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3)), torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3))
        ),
    )
    assert [n for n, _ in randomisation_steps(model)] == ["head", "stages.1", "stages.0", "stem"]


def test_model_without_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="`backbone` attribute"):
        randomisation_steps(torch.nn.Linear(2, 2))


def test_reinitialise_changes_every_parameter_reproducibly():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    before = a.weight.detach().clone()
    reinitialise(a, torch.Generator().manual_seed(0))
    reinitialise(b, torch.Generator().manual_seed(0))
    assert not torch.equal(a.weight, before)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_gradient_maps_change_under_randomisation_and_the_model_is_left_untouched(tiny_model, images):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cascade = randomisation_cascade(tiny_model, images, input_gradient(0), seed=0)
    assert list(cascade) == ["original", "head", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert cascade["original"]["rank_corr"].numpy() == pytest.approx(1.0)  # deterministic method
    per, passed = sanity_summary(cascade, threshold=0.5)
    assert passed and float(per["mprt_similarity"].mean()) < 0.5
    assert set(per) == {"mprt_similarity", "mprt_ssim", "emprt"}
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())


@pytest.mark.parametrize("explain", [constant_map, lambda model, x: sobel_maps(x)], ids=["constant", "edges"])
def test_maps_that_ignore_the_model_fail_the_check(tiny_model, images, explain):
    cascade = randomisation_cascade(tiny_model, images[:2], explain, seed=0)
    for step in cascade.values():
        assert step["rank_corr"].numpy() == pytest.approx(1.0)
        assert step["ssim"].numpy() == pytest.approx(1.0)
    per, passed = sanity_summary(cascade)
    assert not passed and per["mprt_similarity"].numpy() == pytest.approx(1.0)


def test_similarity_is_on_the_magnitude_so_a_sign_flip_has_not_changed(tiny_model, images):
    """Adebayo et al. compare |map|: a method whose randomised maps only flip sign keeps
    its structure and must fail (signed rho would call it 'changed')."""
    calls = {"n": 0}

    def flipping(model, x):
        calls["n"] += 1
        base = input_gradient(0)(tiny_model, x)  # always the trained model's map
        return base if calls["n"] <= 2 else -base

    cascade = randomisation_cascade(tiny_model, images[:2], flipping, seed=0)
    per, passed = sanity_summary(cascade)
    assert not passed and per["mprt_similarity"].numpy() == pytest.approx(1.0)


def test_a_method_that_changes_only_deep_in_the_cascade_fails_the_first_block_criterion():
    import torch as t

    steps = ["original", "head", "layer4", "layer3"]
    rho = {"original": 1.0, "head": 0.9, "layer4": 0.2, "layer3": 0.1}
    cascade = {s: {"rank_corr": t.full((3,), rho[s], dtype=t.float64), "entropy": t.ones(3)} for s in steps}
    per, passed = sanity_summary(cascade, threshold=0.5)
    assert not passed  # the average over blocks (0.4) is below, but the head block is not
    cascade["head"]["rank_corr"][:] = 0.3
    assert sanity_summary(cascade, threshold=0.5)[1]


def test_a_map_constant_up_to_rounding_noise_fails_instead_of_passing(tiny_model, images):
    """A 1x1 CAM upsampled in float32 is constant up to ~1e-7: ranking that noise would
    give rho ~ 0 (a spurious pass); snapped, it is flat and unchanged."""
    g = torch.Generator().manual_seed(0)

    def near_constant(model, x):
        return 1.0 + 1e-7 * torch.rand(x.shape[0], *x.shape[-2:], generator=g)

    cascade = randomisation_cascade(tiny_model, images[:2], near_constant, seed=0)
    per, passed = sanity_summary(cascade)
    assert not passed and per["mprt_similarity"].numpy() == pytest.approx(1.0)


def test_a_repeatable_explainer_is_not_run_again_on_the_untouched_copy(tiny_model, images):
    calls, gradient = [], input_gradient(0)

    def explain(model, x):
        calls.append(model)
        return gradient(model, x)

    plain = randomisation_cascade(tiny_model, images, explain)
    n_plain = len(calls)
    calls.clear()
    explain.repeatable = True
    repeat = randomisation_cascade(tiny_model, images, explain)
    assert len(calls) == n_plain - 1 == len(randomisation_steps(tiny_model)) + 1
    for step in plain:
        for k in plain[step]:
            torch.testing.assert_close(repeat[step][k], plain[step][k])


class CommonMode(torch.nn.Module):
    """A last stage whose channels share one spatial mode (a_c x intensity, plus a small
    channel-specific part) under a linear head that weights them by a_c: the situation
    of a CC model whose layer4 channels all fire on nuclei. A random head is a random
    projection of those channels, so its CAM keeps the common mode or not depending on
    the draw."""

    def __init__(self, channels: int = 16, spread: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.targets = ("cc",)
        self.backbone = torch.nn.Conv2d(3, channels, 1, bias=False)
        self.head = torch.nn.Linear(channels, 1)
        with torch.no_grad():
            a = 0.5 + torch.rand(channels, generator=g)
            weight = a[:, None] / 3 + spread * torch.randn(channels, 3, generator=g)
            self.backbone.weight.copy_(weight[..., None, None])
            self.head.weight.copy_(a[None])

    def forward(self, x):
        return self.head(self.backbone(x).mean(dim=(-2, -1)))


def head_cam(model, x):
    """HiResCAM of a linear head on global average pooling: Σ_c w_c A_c."""
    return torch.einsum("c,bchw->bhw", model.head.weight[0], model.backbone(x)).detach()


def test_one_draw_of_a_random_head_is_luck_and_draws_average_it_out():
    model, x = CommonMode().eval(), torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def head(seed, draws):
        return randomisation_cascade(model, x, head_cam, seed, draws=draws)["head"]

    one = [float(head(s, 1)["rank_corr"].mean()) for s in range(12)]
    assert min(one) < 0.5 < max(one)  # one draw: the verdict on the head is the seed's
    many = [head(s, 8) for s in range(6)]
    means = [float(h["rank_corr"].mean()) for h in many]
    assert min(means) > 0.5 and max(means) - min(means) < max(one) - min(one)
    assert all(float(h["rank_corr_draws"].max()) > 0.5 for h in many)  # every seed sees the structure kept


def test_a_map_whose_polarity_is_all_the_model_chooses_fails_on_every_seed(tiny_model, images):
    """Planted: the darkness map or its complement, by the sign of the head's weights (what
    Grad-CAM's ReLU does to a random head's flipped common mode). Its draws give rho +1 or
    -1, whose mean passes; the map is the image's structure either way and must fail."""

    def polarity(model, x):
        dark = 1.0 - x.mean(dim=1)
        return dark if float(model.head.weight[0].detach().sum()) > 0 else 1.0 - dark

    cancelled = 0
    for seed in range(4):
        cascade = randomisation_cascade(tiny_model, images[:2], polarity, seed, draws=5)
        draws = cascade["head"]["rank_corr_draws"]
        assert set(draws.round().tolist()) <= {-1.0, 1.0}
        if all(float(c["rank_corr"].mean()) < 0.5 for c in list(cascade.values())[1:]):
            cancelled += 1  # both polarities drawn: the mean over draws would pass it
        assert not sanity_summary(cascade)[1]
    assert cancelled > 0


def test_draws_are_fresh_re_initialisations_whose_similarities_are_averaged(tiny_model, images):
    one = randomisation_cascade(tiny_model, images[:2], input_gradient(0), seed=3)
    three = randomisation_cascade(tiny_model, images[:2], input_gradient(0), seed=3, draws=3)
    assert list(three) == list(one) and len(three["original"]["rank_corr_draws"]) == 1
    for step in list(three)[1:]:
        per_draw = three[step]["rank_corr_draws"]
        assert len(per_draw) == 3 and len(set(per_draw.tolist())) == 3  # each draw its own weights
        # the first draw is the single-draw cascade of the same seed
        assert float(per_draw[0]) == pytest.approx(float(one[step]["rank_corr"].mean()))
        assert float(three[step]["rank_corr"].mean()) == pytest.approx(float(per_draw.mean()))
    with pytest.raises(ValueError, match="draws must be >= 1"):
        randomisation_cascade(tiny_model, images[:2], input_gradient(0), draws=0)
