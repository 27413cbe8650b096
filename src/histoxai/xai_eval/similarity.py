"""Batched rank statistics and map similarity (torch, on the maps' device).

Used by the localisation AUROC, the randomisation sanity check and the stability
measures. All functions take a batch of maps and return one value per map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def flat(maps: Tensor) -> Tensor:
    """(B, H, W) or (B, N) -> (B, N) float64; refuses NaN/inf."""
    x = maps.reshape(maps.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("saliency maps contain NaN or inf values")
    return x


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..N along the last axis of (B, N), ties given their average rank.

    Same as ``scipy.stats.rankdata(method="average")`` per row, vectorised: values are
    sorted, runs of equal values get one group id each, and the mean position of each
    group is scattered back.
    """
    b, n = x.shape
    values, order = x.sort(dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.cumsum(dim=1) - 1 + (torch.arange(b, device=x.device) * n)[:, None]  # (B, N) global ids
    position = torch.arange(1, n + 1, device=x.device, dtype=torch.float64).expand(b, n)
    mean = torch.zeros(b * n, device=x.device, dtype=torch.float64)
    mean = mean.scatter_reduce(0, group.flatten(), position.flatten(), "mean", include_self=False)
    return torch.empty_like(position).scatter_(1, order, mean[group])


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of (B, N) tensors.

    Where a row is constant the correlation is undefined; it is set to 1 when both rows
    are constant (two flat maps carry the same, empty, picture: nothing changed) and 0
    when only one is.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    r = (a * b).sum(dim=1) / (na * nb).clamp_min(torch.finfo(a.dtype).tiny)
    both_flat = ((na == 0) & (nb == 0)).to(r.dtype)
    return torch.where((na > 0) & (nb > 0), r.clamp(-1.0, 1.0), both_flat)


def rank_correlation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation per pair of maps, (B,) float64 (see :func:`pearson` for
    constant maps)."""
    a, b = flat(maps_a), flat(maps_b)
    return pearson(average_ranks(a), average_ranks(b))


def minmax(maps: Tensor) -> Tensor:
    """Scale each (H, W) map of (B, H, W) to [0, 1]; a constant map becomes zeros."""
    x = maps.to(torch.float64)
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-300), torch.zeros_like(x))


def ssim(maps_a: Tensor, maps_b: Tensor, win_size: int = 7) -> Tensor:
    """Structural similarity (Wang et al. 2004) per pair of maps, (B,) float64.

    Each map is min-max scaled to [0, 1] first (data range 1), then SSIM is computed
    with scikit-image's defaults (uniform ``win_size`` window, sample covariance,
    K1 = 0.01, K2 = 0.03) and averaged over the window positions that fit inside the
    map, so it equals ``skimage.metrics.structural_similarity(a, b, data_range=1)``.
    """
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps to compare differ in shape: {tuple(maps_a.shape)} vs {tuple(maps_b.shape)}")
    if min(maps_a.shape[-2:]) < win_size:
        raise ValueError(f"maps of {tuple(maps_a.shape[-2:])} px are smaller than the SSIM window {win_size}")
    x, y = minmax(maps_a)[:, None], minmax(maps_b)[:, None]  # (B, 1, H, W)

    def pool(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = pool(x), pool(y)
    cov_norm = win_size**2 / (win_size**2 - 1)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))
