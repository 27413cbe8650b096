import pytest
import torch

from histoxai.config import AugmentConfig
from histoxai.stain import hed_jitter, hed_to_rgb, rgb_to_hed
from histoxai.training.augment import augment_batch, random_flips, random_rot90, random_rotation


@pytest.fixture
def batch():
    return torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fn", [random_flips, random_rot90])
def test_flips_and_rot90_only_move_pixels(batch, fn):
    out = fn(batch, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape
    for a, b in zip(batch, out):  # each image: same pixels (RGB triplets), new places
        pa, pb = a.reshape(3, -1).T.tolist(), b.reshape(3, -1).T.tolist()
        assert sorted(pa) == sorted(pb)
    assert not torch.equal(out, batch)  # 8 images: some were moved


def test_rot90_draws_each_turn_and_is_seeded(batch):
    out = random_rot90(batch, torch.Generator().manual_seed(3))
    turns = set()
    for a, b in zip(batch, out):
        turns |= {k for k in range(4) if torch.equal(torch.rot90(a, k, dims=(-2, -1)), b)}
    assert len(turns) >= 2
    assert torch.equal(out, random_rot90(batch, torch.Generator().manual_seed(3)))


def test_small_rotation_keeps_the_centre_and_zero_is_identity(batch):
    assert torch.equal(random_rotation(batch, 0.0), batch)
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    out = random_rotation(smooth, 10.0, torch.Generator().manual_seed(0))
    assert out.shape == smooth.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(
        out[..., 12:20, 12:20], smooth[..., 12:20, 12:20], atol=0.06
    )  # <= 10 deg about the centre
    assert not torch.allclose(out, smooth, atol=1e-3)


def test_hed_round_trip_is_exact_and_jitter_changes_only_colour(batch):
    assert torch.allclose(hed_to_rgb(rgb_to_hed(batch.clamp(0.01, 1))), batch.clamp(0.01, 1), atol=1e-5)
    out = hed_jitter(batch, 0.05, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    assert 0 < (out - batch).abs().mean() < 0.1
    assert torch.equal(hed_jitter(batch, 0.0), batch)


def test_augment_batch_applies_what_is_switched_on(batch):
    off = AugmentConfig(flips=False, rot90=False, small_rotation_deg=0, stain_jitter=0)
    assert torch.equal(augment_batch(batch, off), batch)
    on = AugmentConfig(flips=True, rot90=True, small_rotation_deg=5, stain_jitter=0.05)
    a = augment_batch(batch, on, torch.Generator().manual_seed(7))
    b = augment_batch(batch, on, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, batch)


def test_blur_is_a_gaussian_of_random_sigma_per_image_and_keeps_the_mean(batch):
    from scipy import ndimage

    from histoxai.training.augment import random_blur

    assert torch.equal(random_blur(batch, 0.0), batch)
    out = random_blur(batch, 1.2, torch.Generator().manual_seed(0))
    sigmas = torch.rand((8,), generator=torch.Generator().manual_seed(0)) * 1.2  # the draw it made
    for img, res, s in zip(batch, out, sigmas.tolist()):
        ref = ndimage.gaussian_filter(img.numpy(), sigma=(0, s, s), mode="mirror", truncate=4.0)
        assert abs(res - torch.from_numpy(ref)).max() < 2e-3
    assert torch.allclose(out.mean((-2, -1)), batch.mean((-2, -1)), atol=0.02)
    assert out.std() < batch.std()  # smoothed
    assert torch.equal(out, random_blur(batch, 1.2, torch.Generator().manual_seed(0)))


def test_augment_batch_applies_blur_when_configured(batch):
    cfg = AugmentConfig(flips=False, rot90=False, blur_sigma_px=1.0)
    assert not torch.equal(augment_batch(batch, cfg, torch.Generator().manual_seed(0)), batch)
    assert torch.equal(augment_batch(batch, AugmentConfig(flips=False, rot90=False)), batch)
