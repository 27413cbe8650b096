"""Robustness: max-sensitivity (Yeh et al. 2019), and agreement between variants.

- :func:`max_sensitivity`: SENS_max(Φ, x) = max_{‖δ‖∞ ≤ r} ‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖,
  estimated by Monte Carlo over ``draws`` perturbations δ ~ U(−r, r)^(3×H×W) (as Quantus'
  ``MaxSensitivity`` with its uniform noise and norm-normalised difference). Lower is
  better. A stochastic explainer (SmoothGrad) must use the *same* internal noise for x
  and every x + δ, or it is penalised for its own Monte-Carlo noise: the explainers of
  :mod:`histoxai.xai_eval.inputs` re-seed their RNG on every call, and each draw
  explains the same batch layout, so the noise is shared.
- :func:`variant_agreement`: similarity of stored maps of two parameter variants of
  the same method (e.g. SmoothGrad σ = 0.2 vs 0.3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from histoxai.xai_eval.registry import declare
from histoxai.xai_eval.similarity import rank_correlation, ssim

MAX_SENS = declare("max_sensitivity", "robustness", higher=False, primary=True)


def max_sensitivity(
    model: nn.Module,
    images: Tensor,
    explain_fn: Callable[[nn.Module, Tensor], Tensor],
    radius: float = 0.02,
    draws: int = 50,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Max-sensitivity per patch, ``{"max_sensitivity": (B,) float64 CPU}``.

    Args:
        model: the regressor (eval mode).
        images: (B, 3, H, W) in [0, 1].
        explain_fn: the method under test (deterministic per call, see module doc).
        radius: L∞ radius r of the perturbations (input range [0, 1]).
        draws: Monte-Carlo draws (≥ 50 in the published setting).
        seed: seed of the perturbations.
    """
    if draws < 1:
        raise ValueError(f"max-sensitivity needs at least one draw, got draws={draws}")
    generator = torch.Generator().manual_seed(seed)
    clean = explain_fn(model, images).detach().double()
    norm = clean.flatten(1).norm(dim=1).clamp_min(1e-12)
    worst = torch.zeros(len(images), dtype=torch.float64, device=clean.device)
    for _ in range(draws):
        delta = (torch.rand(images.shape, generator=generator) * 2 - 1).to(
            images.device, images.dtype
        ) * radius
        noisy = explain_fn(model, (images + delta).clamp(0.0, 1.0)).detach().double()
        worst = torch.maximum(worst, (noisy - clean).flatten(1).norm(dim=1) / norm)
    return {MAX_SENS: worst.cpu()}


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
