import numpy as np
import torch
from torchstain.torch.normalizers.macenko import TorchMacenkoNormalizer

from histoxai.stain import MacenkoNormalizer, fit_macenko, hed_to_rgb, pick_reference, rgb_to_hed


def _batch(store) -> torch.Tensor:
    return torch.from_numpy(store.images(np.arange(0, len(store), 8))).permute(0, 3, 1, 2).float() / 255


def test_macenko_removes_most_of_a_stain_change(phantom):
    x = _batch(phantom)
    norm = fit_macenko(phantom.images([pick_reference(phantom.images(np.arange(len(phantom))))])[0])
    restained = hed_to_rgb(rgb_to_hed(x) * torch.tensor([1.5, 0.6, 1.0]).view(1, 3, 1, 1))  # same tissue
    a, b = norm(x), norm(restained)
    assert a.shape == x.shape and torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    ratio = (a - b).abs().mean((1, 2, 3)) / (x - restained).abs().mean((1, 2, 3))
    assert ratio.median() < 0.5


def test_batched_normalisation_matches_torchstain(phantom):
    images = phantom.images([3, 40, 90])
    ref = TorchMacenkoNormalizer()
    ref.fit(torch.from_numpy(images[0]).permute(2, 0, 1))
    expected = torch.stack(
        [
            ref.normalize(torch.from_numpy(im).permute(2, 0, 1), stains=False)[0].float() / 255
            for im in images[1:]
        ]
    )
    ours = fit_macenko(images[0])(torch.from_numpy(images[1:]).permute(0, 3, 1, 2).float() / 255)
    assert (ours.permute(0, 2, 3, 1) - expected).abs().max() < 3 / 255  # torchstain truncates to int


def test_blank_patches_pass_unchanged_and_the_reference_round_trips(phantom):
    norm = fit_macenko(phantom.images([0])[0])
    white = torch.full((2, 3, 16, 16), 0.97)
    assert torch.equal(norm(white), white)
    clone = MacenkoNormalizer(**norm.reference())
    x = _batch(phantom)[:4]
    assert torch.equal(clone(x), norm(x))
