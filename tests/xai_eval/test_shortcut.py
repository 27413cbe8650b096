import numpy as np
import pytest
import torch
from torch import nn

from histoxai.xai_eval.faithfulness import gaussian_blur
from histoxai.xai_eval.shortcut import border_band, border_share, shortcut_report
from tests.xai_eval.conftest import input_gradient


def content_attribution(model, x):
    """Gradient × (x − blurred x): first-order content relevance against a blurred
    baseline (positive where the pixel's content, here the dark cue, raises ŷ)."""
    return input_gradient(0)(model, x) * (x - gaussian_blur(x, 2.0)).sum(dim=1)


SIZE = 16


def test_border_band_and_share():
    band = border_band(SIZE, SIZE, 2)
    assert band.sum() == SIZE * SIZE - (SIZE - 4) ** 2
    share, area = border_share(band.float()[None], 2)
    assert share.item() == pytest.approx(1.0) and area == pytest.approx(band.float().mean().item())
    share, _ = border_share(-band.float()[None], 2)  # signed: negative relevance is not mass on the cue
    assert share.item() == pytest.approx(float(band.float().mean()))  # no positive mass: uniform
    with pytest.raises(ValueError, match="does not fit"):
        border_band(4, 4, 2)


def test_report_ratio_of_a_map_on_the_border_and_of_a_uniform_map():
    band = border_band(SIZE, SIZE, 1).float()
    report = shortcut_report({"border": band[None].repeat(3, 1, 1), "flat": torch.ones(3, SIZE, SIZE)}, 1)
    report = report.set_index("method")
    assert report.loc["border", "ratio"] == pytest.approx(1 / band.mean().item())
    assert report.loc["flat", "ratio"] == pytest.approx(1.0)


def images_with(n, generator, cue: bool):
    """Flat noisy patches. With ``cue`` the 1-px border is darkened by 0.4·y (the target);
    without, the target sets the overall brightness instead."""
    y = torch.rand(n, generator=generator)
    level = (
        0.45 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
        if cue
        else 0.3 + 0.4 * y[:, None, None, None]
    )
    x = level + 0.1 * torch.rand(n, 3, SIZE, SIZE, generator=generator)
    if cue:
        x[:, :, border_band(SIZE, SIZE, 1)] -= 0.4 * y[:, None, None]
    return x.clamp(0, 1), y


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.targets = ("md",)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def trained(cue: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        x, y = images_with(32, g, cue)
        loss = ((model(x)[:, 0] - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = images_with(16, g, cue)
    return model.eval(), x, y


@pytest.mark.slow
def test_gradients_reveal_the_border_cue_of_a_model_trained_on_it():
    model, x, y = trained(cue=True)
    with torch.no_grad():
        assert np.corrcoef(model(x)[:, 0].numpy(), y.numpy())[0, 1] > 0.9  # it learned the cue
    control, xc, _ = trained(cue=False)  # same architecture, no cue: its own border bias
    rel = content_attribution(model, x)
    report = shortcut_report({"right": rel}, band_px=1, cue=y.numpy()).set_index("method")
    base = shortcut_report({"right": content_attribution(control, xc)}, band_px=1).set_index("method")
    assert report.loc["right", "border_share"] > 0.5  # most positive relevance on the band
    assert report.loc["right", "ratio"] > 2.0 * base.loc["right", "ratio"]
