"""Sanity check by cascading model-parameter randomisation (Adebayo et al. 2018).

Layers of a deep copy of the model are re-initialised from the output head down to the
stem, one block at a time; after each step the same patches are explained again and
compared with the maps of the trained model, as published: Spearman rank correlation
and SSIM of |map| (Adebayo et al. 2018, sec. 3; the absolute value, so a map that only
flips its sign has *not* changed). A method whose maps stay the same while the model
turns into noise is not explaining the model.

Pass criterion (the average criterion of Quantus' MPRT): the mean ρ over the sanity
patches must be below the threshold at the first randomised block (the head) and stay
below it at every later block, and this on every one of ``draws`` independent
re-initialisations. One draw of a head is one random projection of the last stage's
channels; where those channels share a spatial mode (all fire on nuclei) the draw decides
the head step (the demo's CC HiResCAM at layer4 gave ρ 0.29 to 0.91 over eight draws), so
a single-draw verdict is a coin flip. Nor may draws be averaged: Grad-CAM's ReLU turns a
random head's flipped common mode into the complement of the nuclei, so its draws swing
between ρ +0.8 and −0.8 (the map is the image's structure either way) and their mean
(~0.2) would pass a map the model only chooses the polarity of. ``mprt_similarity`` (per
patch: mean ρ over the randomised blocks and draws; lower is better) is the primary
randomisation metric. eMPRT
(Hedström et al. 2023) is the second view: the explanation's entropy (of |map| as a
distribution over pixels) after full randomisation divided by its entropy before; a
map of a random network should be more complex, so > 1 is expected.

Quantus' ``MPRT`` resets every module with ``reset_parameters`` one at a time (dozens
of steps for a ResNet, each a full re-explanation, through its numpy model wrapper);
this version randomises whole blocks (head, then each stage of the backbone, then the
stem), which is the granularity of Adebayo et al.'s figures, and stays in torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from histoxai.xai_eval.registry import declare
from histoxai.xai_eval.similarity import flat, rank_correlation, ssim

MPRT = declare("mprt_similarity", "randomisation", higher=False, primary=True)
MPRT_SSIM = declare("mprt_ssim", "randomisation", higher=False)
EMPRT = declare("emprt", "randomisation", higher=True)

ExplainFn = Callable[[nn.Module, Tensor], Tensor]
"""``(model, images (B, 3, H, W) in [0, 1]) -> maps (B, H, W)``."""


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomisation_steps(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Blocks to re-initialise, from the output down: (step name, module names).

    The first step is everything outside ``model.backbone`` (the regression heads);
    then the backbone's top-level children that hold parameters, last first, where a
    child that is a Sequential of several parameterised blocks (timm's ``stages``,
    ``blocks``; not a stem of plain conv/norm layers) is split into those blocks.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError("randomisation needs a model with a `backbone` attribute (the Regressor contract)")
    head = [name for name, m in model.named_children() if m is not backbone and _has_params(m)]
    blocks: list[tuple[str, list[str]]] = []
    for name, child in backbone.named_children():
        if not _has_params(child):
            continue
        parts = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        # split containers of blocks (timm `stages`, `blocks`), not a stem of plain layers
        if isinstance(child, nn.Sequential) and len(parts) > 1 and all(any(c.children()) for _, c in parts):
            blocks.extend((n, [f"backbone.{n}"]) for n, _ in parts)
        else:
            blocks.append((name, [f"backbone.{name}"]))
    if not blocks and _has_params(backbone):  # a backbone that is a single layer
        blocks = [("backbone", ["backbone"])]
    steps = [("head", head)] if head else []
    return steps + blocks[::-1]


def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise all parameters of ``module`` in place: modules with
    ``reset_parameters`` use it (PyTorch's default init); other parameters get
    N(0, 0.02). Running statistics of normalisation layers are reset too."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng():  # leave the caller's global RNG streams alone
        torch.manual_seed(seed)
        covered: set[int] = set()
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                covered.update(id(p) for p in m.parameters(recurse=False))
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
        with torch.no_grad():
            for p in module.parameters():
                if id(p) not in covered:
                    p.normal_(0.0, 0.02)


def randomisation_cascade(
    model: nn.Module,
    images: Tensor,
    explain_fn: ExplainFn,
    seed: int = 0,
    *,
    draws: int = 1,
    progress: bool = False,
) -> dict[str, dict[str, Tensor]]:
    """Similarity of maps after cumulative randomisation, step by step.

    Args:
        model: the trained model (left untouched; a deep copy is randomised).
        images: (B, 3, H, W) in [0, 1], on the model's device.
        explain_fn: the method under test; with a true ``repeatable`` attribute (same
            maps for the same model and images on every call) the untouched copy is not
            explained again for the ``original`` step.
        seed: seed of the re-initialisations.
        draws: independent cascades (fresh copies, fresh re-initialisations) whose
            similarities are averaged.
        progress: show a progress bar.

    Returns:
        Ordered step name -> ``{"rank_corr": (B,), "ssim": (B,), "entropy": (B,)}``
        float64 CPU tensors, the mean over draws, and ``"rank_corr_draws"``: (draws,)
        the mean ρ over patches of each draw; the first step, ``original``, compares
        two explanations of the trained model (1 for a deterministic method, the noise
        floor for a stochastic one).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    generator = torch.Generator().manual_seed(seed)
    reference = explain_fn(model, images).detach()
    # an explainer that re-seeds every call (``repeatable``) gives a copy the same maps
    repeatable = getattr(explain_fn, "repeatable", False)
    again = reference if repeatable else explain_fn(copy.deepcopy(model).eval(), images).detach()
    found: dict[str, list[dict[str, Tensor]]] = {"original": [_similarity(reference, again)]}
    steps = randomisation_steps(model)
    bar = tqdm(total=draws * len(steps), desc="randomisation", disable=not progress, leave=False)
    for _ in range(draws):
        copy_ = copy.deepcopy(model).eval()
        modules = dict(copy_.named_modules())
        for step, names in steps:
            for name in names:
                reinitialise(modules[name], generator)
            found.setdefault(step, []).append(_similarity(reference, explain_fn(copy_, images).detach()))
            bar.update()
    bar.close()
    return {step: _mean_over_draws(sims) for step, sims in found.items()}


def _mean_over_draws(sims: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    out = {k: torch.stack([s[k] for s in sims]).nanmean(dim=0) for k in sims[0]}
    out["rank_corr_draws"] = torch.stack([s["rank_corr"].nanmean() for s in sims])
    return out


def snap(maps: Tensor, rel: float = 1e-5) -> Tensor:
    """|map| rounded to a grid of ``rel`` x its max: differences at the level of float
    rounding (a 1x1 CAM upsampled in float32 is constant up to ~1e-7) become ties, so a
    map without structure compares as flat (rho 1: nothing changed) instead of as
    rounding noise (rho ~ 0, a spurious pass)."""
    m = maps.abs().double()
    step = (m.flatten(1).amax(dim=1) * rel).clamp_min(1e-300)[:, None, None]
    return torch.round(m / step) * step


def _similarity(a: Tensor, b: Tensor) -> dict[str, Tensor]:
    a, b = snap(a), snap(b)
    out = {"rank_corr": rank_correlation(a, b).cpu(), "entropy": entropy(b).cpu()}
    if min(a.shape[-2:]) >= 7:
        out["ssim"] = ssim(a, b).cpu()
    return out


def entropy(maps: Tensor) -> Tensor:
    """Shannon entropy of |map| as a distribution over pixels, (B,) (a flat map: log N)."""
    p = flat(maps).abs()
    total = p.sum(dim=1, keepdim=True)
    p = torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1.0 / p.shape[1]))
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)


def sanity_summary(
    cascade: dict[str, dict[str, Tensor]], threshold: float = 0.5
) -> tuple[dict[str, Tensor], bool]:
    """Per-patch randomisation metrics and the pass verdict of :func:`randomisation_cascade`.

    Returns:
        (per patch ``mprt_similarity``, ``mprt_ssim``, ``emprt`` as (B,) tensors, passed):
        passed when the mean ρ over patches of every randomised block, the first
        included, is below ``threshold`` in every draw (``rank_corr_draws``; a cascade
        without it counts as one draw).
    """
    steps = [s for s in cascade if s != "original"]
    if not steps:
        raise ValueError("randomisation cascade has no randomised steps")
    rho = torch.stack([cascade[s]["rank_corr"] for s in steps])  # (S, B)
    per = {MPRT: rho.nanmean(dim=0)}
    if "ssim" in cascade[steps[0]]:
        per[MPRT_SSIM] = torch.stack([cascade[s]["ssim"] for s in steps]).nanmean(dim=0)
    before = cascade["original"]["entropy"]
    per[EMPRT] = cascade[steps[-1]]["entropy"] / before.clamp_min(1e-12)
    per_draw = [cascade[s].get("rank_corr_draws", cascade[s]["rank_corr"].nanmean()[None]) for s in steps]
    passed = all(bool((block < threshold).all()) for block in per_draw)
    return per, passed
