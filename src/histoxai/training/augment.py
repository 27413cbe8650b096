"""Training augmentations on whole batches, each switchable (``train.augment``).

Every function takes (B, 3, H, W) float RGB in [0, 1] and draws one random choice per
image from ``generator`` (on the CPU, so a seed gives the same augmentations on any
device). None of them changes a target: MD, FA and nuclei counts are invariant to
flips, right-angle and small rotations and to stain colour.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from histoxai.config import AugmentConfig
from histoxai.training.stain import hed_jitter


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device="cpu").to(device)


def random_flips(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally and/or vertically with probability 1/2 each."""
    u = _draw((2, x.shape[0], 1, 1, 1), generator, x.device)
    x = torch.where(u[0] < 0.5, x.flip(-1), x)
    return torch.where(u[1] < 0.5, x.flip(-2), x)


def random_rot90(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each (square) image by k * 90 degrees, k uniform in 0..3."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rot90 needs square images, got {tuple(x.shape[-2:])}")
    k = torch.randint(0, 4, (x.shape[0],), generator=generator).to(x.device)
    out = x
    for turns in (1, 2, 3):
        sel = (k == turns)[:, None, None, None]
        out = torch.where(sel, torch.rot90(x, turns, dims=(-2, -1)), out)
    return out


def random_rotation(
    x: torch.Tensor, max_deg: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image by U(-max_deg, max_deg) degrees about its centre (bilinear,
    reflected borders so no black corners appear)."""
    if max_deg <= 0:
        return x
    angle = (2 * _draw((x.shape[0],), generator, x.device) - 1) * math.radians(max_deg)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the augmentations switched on in ``cfg`` (flips, rot90, small rotation,
    H&E jitter) to a batch."""
    if cfg.flips:
        x = random_flips(x, generator)
    if cfg.rot90:
        x = random_rot90(x, generator)
    if cfg.small_rotation_deg > 0:
        x = random_rotation(x, cfg.small_rotation_deg, generator)
    if cfg.stain_jitter > 0:
        x = hed_jitter(x, cfg.stain_jitter, generator)
    return x
