"""Stability: do maps survive changes that should not matter?

- :func:`noise_stability`: explain ``k`` copies of each patch with small Gaussian pixel
  noise added and compare each map with the map of the clean patch (the "max
  sensitivity"-style local robustness of Yeh et al. 2019, measured as similarity).
- :func:`variant_agreement`: compare stored maps of two parameter variants of the same
  method (e.g. SmoothGrad σ = 0.2 vs 0.3); a method whose picture depends strongly on
  an arbitrary knob is hard to trust.

Similarities are Spearman rank correlation and SSIM (:mod:`histoxai.xai_eval.similarity`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from histoxai.xai_eval.similarity import rank_correlation, ssim

STABILITY_METRICS: tuple[str, ...] = ("noise_rank_corr", "noise_ssim")


def noise_stability(
    model: nn.Module,
    images: Tensor,
    explain_fn: Callable[[nn.Module, Tensor], Tensor],
    noise_sd: float = 0.02,
    copies: int = 4,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Mean similarity between the map of each patch and the maps of ``copies`` noisy
    versions (pixel noise N(0, noise_sd²) on [0, 1] images, clipped).

    Returns:
        ``noise_rank_corr`` and ``noise_ssim``: (B,) float64 CPU tensors (1 = unchanged).
    """
    if copies < 1:
        raise ValueError(f"noise stability needs at least one noisy copy, got copies={copies}")
    generator = torch.Generator().manual_seed(seed)
    clean = explain_fn(model, images).detach()
    rho, sim = [], []
    for _ in range(copies):
        noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype) * noise_sd
        noisy = explain_fn(model, (images + noise).clamp(0.0, 1.0)).detach()
        rho.append(rank_correlation(clean, noisy).cpu())
        sim.append(ssim(clean, noisy).cpu())
    return {"noise_rank_corr": torch.stack(rho).mean(dim=0), "noise_ssim": torch.stack(sim).mean(dim=0)}


def variant_agreement(maps_a: Tensor, maps_b: Tensor) -> dict[str, Tensor]:
    """Similarity of two variants' maps of the same patches, (B,) each."""
    return {
        "variant_rank_corr": rank_correlation(maps_a, maps_b).cpu(),
        "variant_ssim": ssim(maps_a, maps_b).cpu(),
    }


def variant_pairs(variants: Mapping[str, Mapping]) -> list[tuple[str, str]]:
    """Pairs of variant names that share a method (the saliency manifest's
    ``variants``: name -> ``{"method": ..., "params": {...}}``), in name order."""
    by_method: dict[str, list[str]] = {}
    for name, spec in sorted(variants.items()):
        by_method.setdefault(str(spec.get("method", name)), []).append(name)
    return [pair for names in by_method.values() for pair in itertools.combinations(names, 2)]
